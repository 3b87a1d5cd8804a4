"""A small world for the explorer's tests (``/ui``): two projects with API keys, real stored
pull requests, patterns extracted from them (a scripted model, :class:`ReplayLLM`) and embedded
with the real MiniLM, a relationship, a recurrence (a later pull request with the same idea,
merged into the first), and the other project's near-copies, so a leak would show."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Pattern
from pipeline.extract.batch import extract_batch
from pipeline.intake.apikeys import create_api_key
from pipeline.intake.normalize import NormalizedInteraction
from pipeline.intake.store import store
from pipeline.settings import Settings
from pipeline.store.embed import embed_patterns
from support.replay_llm import ReplayLLM, edge, pattern

ADMIN = "operator-token-for-explorer-tests"
A, B = "acme/api", "other/secret"
RETRY = "Retry broker connections with exponential backoff"
RECONNECT_TEST = "Test the reconnect path"
#: A paraphrase of RETRY that shares almost no words with it.
PARAPHRASE = "reconnect to the message broker with growing delays"
#: B's patterns: near-copies of A's, never to be seen with A's key.
B_TITLES = ("Retry broker connections with backoff and jitter", "Rotate the signing secret yearly")


@dataclass
class World:
    """What :func:`populate` made: keys, project ids and pattern ids by title, per project."""

    keys: dict[str, str] = field(default_factory=dict)
    project_ids: dict[str, Any] = field(default_factory=dict)
    patterns: dict[str, dict[str, str]] = field(default_factory=dict)


@dataclass
class Explorer:
    """The explorer being served (the browser tests): its base URL, the world in its database,
    and what extracting more needs."""

    url: str
    world: World
    db: Database
    settings: Settings
    embedder: Any


def pull_requests(db: Database, project: str, texts: list[str]) -> list[int]:
    """Store ``texts`` as pull requests of ``project`` (``https://github.com/<project>/pull/N``)."""
    records = [
        NormalizedInteraction(
            project=project, source="github", kind="pull_request", content=text,
            idempotency_key=f"{project}:{text}",
            external_id=f"https://github.com/{project}/pull/{100 + i}",
        )
        for i, text in enumerate(texts)
    ]  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        return store(s, records).interaction_ids


def extract(
    db: Database, embedder: Any, settings: Settings, ids: list[int], outputs: dict[str, Any]
) -> list[Any]:
    """Extract ``ids`` with a model that answers ``outputs`` (marker → result), then embed;
    returns the new patterns' ids."""
    made = extract_batch(db=db, engine=ReplayLLM(outputs), settings=settings, interaction_ids=ids)
    assert not made.failed, made.failed
    embed_patterns(db=db, embedder=embedder, settings=settings, pattern_ids=made.pattern_ids)
    return list(made.pattern_ids)


def populate(db: Database, embedder: Any, settings: Settings) -> World:
    """Two projects as the module docstring says."""
    world = World()
    for project in (A, B):
        with db.session(ALL_PROJECTS) as s:
            _, world.keys[project] = create_api_key(s, project, "explorer tests")
    ids = pull_requests(db, A, ["A PR 0: retries", "A PR 1: tests", "A PR 2: retries again"])
    retry = pattern(RETRY, evidence="reconnect with delays of 1, 2, 4 seconds")
    extract(db, embedder, settings, ids[:2], {
        "A PR 0": {"patterns": [retry], "relationships": []},
        "A PR 1": {"patterns": [pattern(RECONNECT_TEST, "testing")],
                   "relationships": [edge(RECONNECT_TEST, RETRY)]},
    })  # fmt: skip
    # A later pull request shows the same idea: merged into the first, a recurrence.
    extract(db, embedder, settings, ids[2:], {"A PR 2": {"patterns": [retry], "relationships": []}})
    ids_b = pull_requests(db, B, ["B PR 0", "B PR 1"])
    extract(db, embedder, settings, ids_b, {
        "B PR 0": {"patterns": [pattern(B_TITLES[0])], "relationships": []},
        "B PR 1": {"patterns": [pattern(B_TITLES[1], "security")], "relationships": []},
    })  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        for p in s.scalars(select(Pattern).where(Pattern.is_active.is_(True))):
            name = A if p.title in (RETRY, RECONNECT_TEST) else B
            world.patterns.setdefault(name, {})[p.title] = str(p.id)
            world.project_ids[name] = p.project_id
    return world


def settings_for_tests(**extra: Any) -> Settings:
    """Settings of an explorer test: no broker, the admin token set, a slow poll (the feed
    must be woken by NOTIFY)."""
    return Settings(database_url=None, redis_url=None, admin_token=ADMIN, feed_poll_s=30, **extra)  # type: ignore[arg-type]
