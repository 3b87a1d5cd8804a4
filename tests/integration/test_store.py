"""The store learns, on the real Postgres with the real MiniLM embedder: merges by title and by
embedding, the identifier guard, relationships carried over and accumulated, the lifecycle
(strength, validated after k confirmations, supersedes), usage, and merges under concurrency."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import pytest
from sqlalchemy import func, select
from support.replay_llm import ReplayLLM, edge, pattern

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import (
    Pattern,
    PatternEvent,
    PatternRelationship,
    PatternUsage,
    PatternValidation,
)
from pipeline.extract.batch import extract_batch
from pipeline.intake.normalize import NormalizedInteraction
from pipeline.intake.store import store
from pipeline.settings import Settings
from pipeline.store.embed import embed_patterns
from pipeline.store.lifecycle import pattern_strength
from pipeline.store.search import search

pytestmark = pytest.mark.integration

PROJECT = "acme/widgets"
RETRY = "Retry broker connections with exponential backoff"


def _settings(**kw: Any) -> Settings:
    return Settings(database_url=None, redis_url=None, **kw)


def _interactions(db: Database, texts: list[str], project: str = PROJECT) -> list[int]:
    records = [
        NormalizedInteraction(
            project=project,
            source="api",
            kind="pull_request",
            content=t,
            idempotency_key=f"{project}:{t}",
        )
        for t in texts
    ]
    with db.session(ALL_PROJECTS) as s:
        return store(s, records).interaction_ids


def _extract(db: Database, llm: ReplayLLM, ids: list[int], settings: Settings) -> Any:
    result = extract_batch(db=db, engine=llm, settings=settings, interaction_ids=ids)
    assert not result.failed, result.failed
    return result


def _patterns(db: Database) -> list[Pattern]:
    with db.session(ALL_PROJECTS) as s:
        return list(s.scalars(select(Pattern).order_by(Pattern.created_at, Pattern.id)))


def _events(db: Database) -> list[str]:
    with db.session(ALL_PROJECTS) as s:
        return list(s.scalars(select(PatternEvent.event_type).order_by(PatternEvent.id)))


def test_same_title_and_type_merges_into_one_active_pattern(db: Database) -> None:
    settings = _settings(validation_min_confirmations=2)
    ids = _interactions(db, ["PR one", "PR two", "PR three"])
    llm = ReplayLLM({
        "PR one": {"patterns": [pattern(RETRY), pattern("Test the reconnect path", "testing")],
                   "relationships": [edge("Test the reconnect path", RETRY)]},
        "PR two": {"patterns": [pattern("retry broker connections, with exponential backoff!"),
                                pattern("Test the reconnect path", "testing")],
                   "relationships": [edge("Test the reconnect path", RETRY)]},
        "PR three": {"patterns": [pattern(RETRY.upper())], "relationships": []},
    })  # fmt: skip
    first = _extract(db, llm, ids[:1], settings)
    second = _extract(db, llm, ids[1:], settings)
    assert len(first.pattern_ids) == 2 and second.merged == 3
    rows = _patterns(db)
    active = [p for p in rows if p.is_active]
    assert sorted(p.title for p in active) == [RETRY, "Test the reconnect path"]
    canonical = next(p for p in active if p.title == RETRY)
    merged = [p for p in rows if not p.is_active]
    assert len(merged) == 3 and all(p.superseded_by is not None for p in merged)
    # Two later sightings confirm it: validated (k = 2), strength from the Wilson bound.
    assert canonical.validation_count == 2
    assert canonical.validation_status == "validated"
    assert canonical.pattern_strength == pytest.approx(pattern_strength(2, 0))
    with db.session(ALL_PROJECTS) as s:
        evidence = s.scalars(
            select(PatternValidation.evidence).where(PatternValidation.pattern_id == canonical.id)
        ).all()
        edges = s.scalars(select(PatternRelationship)).all()
    assert {e["match"] for e in evidence} == {"title"}
    # The repeated edge accumulated (noisy-OR of 0.5 and 0.5) instead of being dropped.
    (only,) = edges
    assert only.target_pattern_id == canonical.id
    assert only.validation_count == 1 and only.strength == pytest.approx(0.75)
    events = _events(db)
    assert events.count("pattern.created") == 2 and events.count("pattern.merged") == 3
    assert events.count("pattern.validated") == 1 and events.count("interaction.received") == 3


def test_embedding_twins_merge_but_other_identifiers_never_do(db: Database, embedder: Any) -> None:
    settings = _settings(merge_max_distance=0.35)
    ids = _interactions(db, ["PR a", "PR b", "PR c", "PR d"])
    llm = ReplayLLM({
        "PR a": {"patterns": [pattern(RETRY)], "relationships": []},
        "PR b": {"patterns": [pattern("Reconnect to the broker with exponential backoff")],
                 "relationships": []},
        "PR c": {"patterns": [pattern("Handle TS2322 by widening the declared type", "bug_fix")],
                 "relationships": []},
        "PR d": {"patterns": [pattern("Handle TS2345 by widening the declared type", "bug_fix")],
                 "relationships": []},
    })  # fmt: skip
    result = _extract(db, llm, ids, settings)
    vectors = embedder.encode([RETRY, "Reconnect to the broker with exponential backoff",
                               "Handle TS2322 by widening the declared type",
                               "Handle TS2345 by widening the declared type"])  # fmt: skip
    paraphrase = 1 - float(vectors[0] @ vectors[1])
    identifiers = 1 - float(vectors[2] @ vectors[3])
    assert paraphrase < 0.35 and identifiers < paraphrase  # close: only the guard keeps them apart
    done = embed_patterns(
        db=db, embedder=embedder, settings=settings, pattern_ids=result.pattern_ids
    )
    assert done.embedded == 4 and done.merged == 1
    active = sorted(p.title for p in _patterns(db) if p.is_active)
    assert active == sorted([RETRY, "Handle TS2322 by widening the declared type",
                             "Handle TS2345 by widening the declared type"])  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        (evidence,) = s.scalars(select(PatternValidation.evidence)).all()
    assert evidence["match"] == "embedding" and evidence["cosine_distance"] <= 0.35
    again = embed_patterns(
        db=db, embedder=embedder, settings=settings, pattern_ids=result.pattern_ids
    )
    assert (again.embedded, again.merged) == (0, 0)  # idempotent


def test_a_supersedes_edge_retires_the_older_pattern(db: Database) -> None:
    settings = _settings()
    ids = _interactions(db, ["PR old", "PR new"])
    old, new = "Store results in the database backend", "Store results with the async backend"
    llm = ReplayLLM({
        "PR old": {"patterns": [pattern(old, "api_design")], "relationships": []},
        "PR new": {"patterns": [pattern(new, "api_design")],
                   "relationships": [edge(new, old, "supersedes", 0.9)]},
    })  # fmt: skip
    _extract(db, llm, ids[:1], settings)
    _extract(db, llm, ids[1:], settings)
    rows = {p.title: p for p in _patterns(db)}
    assert not rows[old].is_active and rows[old].superseded_by == rows[new].id
    assert rows[new].supersedes == rows[old].id and rows[new].is_active
    assert "pattern.superseded" in _events(db)


def test_conflicting_patterns_contradict_the_earlier_one(db: Database) -> None:
    """A later pattern that ``conflicts_with`` an earlier one is evidence against it: a
    confirmed pattern keeps its status after one conflict but loses strength; a pattern seen
    once turns ``contradicted`` at the first conflict (share 1/2 >= 0.5). A repeated conflict from
    the same pattern counts once."""
    settings = _settings(validation_min_confirmations=2, contradiction_share=0.5)
    ids = _interactions(db, ["PR a", "PR b", "PR c", "PR d", "PR e"])
    lone, rival = "Pin the broker client version", "Track the newest broker client"
    llm = ReplayLLM({
        "PR a": {"patterns": [pattern(RETRY), pattern(lone, "best_practice")],
                 "relationships": []},
        "PR b": {"patterns": [pattern(RETRY)], "relationships": []},
        "PR c": {"patterns": [pattern(RETRY)], "relationships": []},
        "PR d": {"patterns": [pattern("Fail fast when the broker is gone"),
                              pattern(rival, "best_practice")],
                 "relationships": [edge("Fail fast when the broker is gone", RETRY,
                                        "conflicts_with"),
                                   edge(rival, lone, "conflicts_with")]},
        "PR e": {"patterns": [pattern(rival, "best_practice")],
                 "relationships": [edge(rival, lone, "conflicts_with")]},
    })  # fmt: skip
    for i in ids:
        _extract(db, llm, [i], settings)
    rows = {p.title: p for p in _patterns(db) if p.is_active}
    retry, pinned = rows[RETRY], rows[lone]
    assert (retry.validation_count, retry.contradiction_count) == (2, 1)
    assert retry.validation_status == "validated"
    assert retry.pattern_strength == pytest.approx(pattern_strength(2, 1))
    assert retry.pattern_strength < pattern_strength(2, 0)
    # PR e's rival merged into PR d's: one conflicting pattern, one contradiction.
    assert (pinned.contradiction_count, pinned.validation_status) == (1, "contradicted")
    assert pinned.pattern_strength == pytest.approx(pattern_strength(0, 1))
    with db.session(ALL_PROJECTS) as s:
        kinds = s.scalars(
            select(PatternValidation.validation_type).where(
                PatternValidation.result == "contradicted"
            )
        ).all()
    assert sorted(kinds) == ["conflict", "conflict"]
    assert _events(db).count("pattern.contradicted") == 1


def test_search_hits_are_recorded_as_usage(db: Database, embedder: Any) -> None:
    settings = _settings()
    ids = _interactions(db, ["PR x"])
    llm = ReplayLLM({"PR x": {"patterns": [pattern(RETRY)], "relationships": []}})
    result = _extract(db, llm, ids, settings)
    embed_patterns(db=db, embedder=embedder, settings=settings, pattern_ids=result.pattern_ids)
    query = embedder.encode(["what to do when the broker connection drops"])[0]
    for _ in range(2):
        (hit,) = search(db, query.tolist(), project_id=None, k=3, used_by="search:test")
    assert hit.title == RETRY and 0.5 < hit.score <= 1 and hit.usage_count == 2
    assert [s.interaction_id for s in hit.sources] == ids
    with db.session(ALL_PROJECTS) as s:
        assert s.scalar(select(func.count()).select_from(PatternUsage)) == 2
        assert s.scalar(select(Pattern.usage_count)) == 2


class _InStep:
    """The real embedder, whose callers wait for each other after encoding (so their writes
    start together)."""

    def __init__(self, embedder: Any, parties: int) -> None:
        self._embedder = embedder
        self._barrier = threading.Barrier(parties)
        self.model_name, self.dim = embedder.model_name, embedder.dim

    def encode(self, texts: list[str]) -> Any:
        vectors = self._embedder.encode(texts)
        self._barrier.wait(timeout=30)
        return vectors


def test_two_workers_merging_one_idea_leave_one_canonical(db: Database, embedder: Any) -> None:
    """Two extract writers with the same title, and two embed workers with twins, at once: the
    project's writer lock serialises them, so one canonical pattern remains each time."""
    settings = _settings(merge_max_distance=0.35)
    ids = _interactions(db, ["PR 1", "PR 2", "PR 3", "PR 4"])
    llm = ReplayLLM({
        "PR 1": {"patterns": [pattern(RETRY)], "relationships": []},
        "PR 2": {"patterns": [pattern(RETRY)], "relationships": []},
        "PR 3": {"patterns": [pattern("Pool connections per worker process", "performance")],
                 "relationships": []},
        "PR 4": {"patterns": [pattern("Keep one connection pool in each worker", "performance")],
                 "relationships": []},
    })  # fmt: skip
    errors: list[BaseException] = []
    found: dict[int, list[uuid.UUID]] = {}

    def run(index: int, work: Any, barrier: threading.Barrier) -> None:
        try:
            barrier.wait(timeout=30)
            found[index] = work()
        except BaseException as exc:  # reported below
            errors.append(exc)

    def both(works: list[Any]) -> None:
        barrier = threading.Barrier(len(works))
        threads = [threading.Thread(target=run, args=(i, w, barrier)) for i, w in enumerate(works)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors

    both([lambda i=i: extract_batch(db=db, engine=llm, settings=settings, interaction_ids=[i])
          .pattern_ids for i in ids])  # fmt: skip
    new = [pid for ids_ in found.values() for pid in ids_]
    assert len(new) == 4  # every sighting stored: the second title-twin merged, not dropped
    found.clear()
    # Both embed workers finish encoding before either writes: their transactions overlap.
    in_step = _InStep(embedder, parties=len(new))
    both([lambda p=p: [embed_patterns(db=db, embedder=in_step, settings=settings,
                                      pattern_ids=[p]).merged] for p in new])  # fmt: skip
    active = [p for p in _patterns(db) if p.is_active]
    assert sorted(p.type for p in active) == ["error_handling", "performance"], [
        p.title for p in active
    ]
    with db.session(ALL_PROJECTS) as s:
        assert s.scalar(select(func.count()).select_from(PatternValidation)) == 2
