"""The periodic sweep's embedding pass on the embedded Postgres: active patterns left without an
embedding (their embed message lost with Redis, or never published after a crash) get their
embed task published again, in batches, once per staleness period. A recording dispatcher stands
in for Celery: the database query is what is tested."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from sqlalchemy import func, insert, select, text, update

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, Pattern
from pipeline.errors import RetryableError
from pipeline.intake.normalize import normalize_interaction
from pipeline.intake.store import store
from pipeline.ops.housekeeping import republish_unembedded, sweep
from pipeline.settings import Settings
from pipeline.types import ClaudeMode, TaskType

pytestmark = pytest.mark.integration


class RecordingDispatcher:
    """A :class:`pipeline.dispatch.Dispatcher` that records what it is asked to publish;
    ``fail_embed``: its ``embed`` raises as a broker that is down does."""

    eager = False

    def __init__(self, *, fail_embed: bool = False) -> None:
        self.calls: list[tuple[str, list[Any]]] = []
        self.fail_embed = fail_embed

    def extract(
        self, interaction_ids: Sequence[int], *, route: bool = True,
        claude_mode: ClaudeMode = ClaudeMode.SYNC,
    ) -> None:  # fmt: skip
        self.calls.append(("extract", list(interaction_ids)))

    def claude(
        self, interaction_ids: Sequence[int], task_type: TaskType, *,
        claude_mode: ClaudeMode = ClaudeMode.SYNC,
    ) -> None:  # fmt: skip
        self.calls.append(("claude", list(interaction_ids)))

    def analyze_local(
        self, interaction_ids: Sequence[int], route_reasons: Mapping[int, str] | None = None
    ) -> None:
        self.calls.append(("analyze_local", list(interaction_ids)))

    def embed(self, pattern_ids: Sequence[uuid.UUID]) -> None:
        if self.fail_embed:
            raise RetryableError("broker unreachable")
        self.calls.append(("embed", list(pattern_ids)))

    def feedback(self, interaction_ids: Sequence[int]) -> None:
        self.calls.append(("feedback", list(interaction_ids)))

    def embedded(self) -> list[list[uuid.UUID]]:
        return [ids for name, ids in self.calls if name == "embed"]


def _settings(**extra: Any) -> Settings:
    return Settings(
        database_url=None, redis_url=None, embed_stale_after_s=600, embedding_batch_size=2,
        **extra,
    )  # type: ignore[arg-type]  # fmt: skip


def _pattern(db: Database, iid: int, title: str, age_s: float, **values: Any) -> uuid.UUID:
    """A pattern of the interaction's project, created (and last touched) ``age_s`` ago."""
    when = func.now() - dt.timedelta(seconds=age_s)
    with db.session(ALL_PROJECTS) as s:
        project = s.scalar(select(Interaction.project_id).where(Interaction.id == iid))
        pid = s.scalar(
            insert(Pattern)
            .values(
                project_id=project, type="solution", title=title,
                content={"description": title, "evidence": ""}, source_interaction_id=iid,
                extraction_key="k", created_at=when, updated_at=when, **values,
            )
            .returning(Pattern.id)
        )  # fmt: skip
    assert isinstance(pid, uuid.UUID)
    return pid


@pytest.fixture()
def scene(db: Database) -> dict[str, list[uuid.UUID]]:
    """Stale unembedded patterns in two projects (oldest first), and ones the sweep leaves:
    young, embedded, inactive."""
    with db.session(ALL_PROJECTS) as s:
        ids = store(
            s, [normalize_interaction({"project": p, "content": f"c {p}"}) for p in ("a/a", "b/b")]
        ).interaction_ids
    vector = [0.0] * 383 + [1.0]
    stale = [
        _pattern(db, ids[0], "oldest", 3000),
        _pattern(db, ids[1], "other project", 2000),
        _pattern(db, ids[0], "stale", 700),
    ]
    return {
        "stale": stale,
        "young": [_pattern(db, ids[0], "young", 30)],
        "embedded": [_pattern(db, ids[0], "embedded", 3000, embedding=vector)],
        "inactive": [_pattern(db, ids[1], "merged away", 3000, is_active=False)],
    }


def _age(db: Database, ids: list[uuid.UUID], seconds: float) -> None:
    with db.session(ALL_PROJECTS) as s:
        s.execute(
            update(Pattern)
            .where(Pattern.id.in_(ids))
            .values(updated_at=func.now() - dt.timedelta(seconds=seconds))
        )


def test_stale_unembedded_patterns_are_republished_in_batches(
    db: Database, scene: dict[str, list[uuid.UUID]]
) -> None:
    dispatcher = RecordingDispatcher()
    settings = _settings()

    assert republish_unembedded(db=db, dispatcher=dispatcher, settings=settings) == 3
    assert dispatcher.embedded() == [scene["stale"][:2], scene["stale"][2:]]  # oldest first, by 2

    # Published: not again before another staleness period has passed.
    assert republish_unembedded(db=db, dispatcher=dispatcher, settings=settings) == 0
    _age(db, scene["stale"][:1], 601)
    assert republish_unembedded(db=db, dispatcher=dispatcher, settings=settings) == 1
    assert dispatcher.embedded()[-1] == scene["stale"][:1]
    assert {n for n, _ in dispatcher.calls} == {"embed"}


def test_the_sweep_limit_bounds_one_pass(db: Database, scene: dict[str, list[uuid.UUID]]) -> None:
    dispatcher = RecordingDispatcher()
    settings = _settings(outbox_sweep_limit=2)
    assert republish_unembedded(db=db, dispatcher=dispatcher, settings=settings) == 2
    assert republish_unembedded(db=db, dispatcher=dispatcher, settings=settings) == 1
    assert [i for ids in dispatcher.embedded() for i in ids] == scene["stale"]


def test_a_broker_failure_leaves_them_for_the_next_sweep(
    db: Database, scene: dict[str, list[uuid.UUID]]
) -> None:
    settings = _settings()
    down = RecordingDispatcher(fail_embed=True)
    assert republish_unembedded(db=db, dispatcher=down, settings=settings) == 0
    up = RecordingDispatcher()
    assert republish_unembedded(db=db, dispatcher=up, settings=settings) == 3
    assert [i for ids in up.embedded() for i in ids] == scene["stale"]


def test_the_housekeeping_sweep_runs_it(db: Database, scene: dict[str, list[uuid.UUID]]) -> None:
    dispatcher = RecordingDispatcher()
    summary = sweep(db=db, dispatcher=dispatcher, settings=_settings())
    assert summary.embeds_republished == 3
    assert [i for ids in dispatcher.embedded() for i in ids] == scene["stale"]
    assert summary.republished == 0  # the interactions are young: nothing for the outbox


@pytest.mark.parametrize("waiting", [5, None])
def test_the_outbox_holds_while_extract_messages_wait_and_the_rest_goes_on(
    db: Database,
    scene: dict[str, list[uuid.UUID]],
    stored_interactions: Any,
    waiting: int | None,
) -> None:
    """Off the extract queue, the sweep would take a backlog for lost messages: while the extract
    queue holds messages (or cannot be read) a stale interaction is left alone."""
    ids = stored_interactions(1, key="backlog-{i}")
    with db.session(ALL_PROJECTS) as s:
        s.execute(text("UPDATE interactions SET created_at = now() - interval '2 hours'"))
    dispatcher = RecordingDispatcher()
    held = sweep(db=db, dispatcher=dispatcher, settings=_settings(), backlog=lambda _: waiting)
    assert held.outbox_held and held.extract_backlog == waiting and held.examined == 0
    assert held.embeds_republished == 3
    free = sweep(db=db, dispatcher=RecordingDispatcher(), settings=_settings(), backlog=lambda _: 0)
    assert not free.outbox_held and free.examined >= 1 and free.republished >= len(ids)
