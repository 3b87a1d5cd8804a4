"""Retries ride with refills (pipeline.extract.attempts.Refill) through the extract task on the
embedded Postgres: a batch's retry goes out in the same engine call as first attempts of more
queued interactions claimed under the task's lease, and those are routed, extracted, recorded
in ``llm_calls``, stored, handed on and released like the batch's own. The engine is scripted
at its boundary (a StructuredLLM)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select, update
from support.dispatch import RecordingDispatcher
from support.replay_llm import pattern

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, LLMCall
from pipeline.errors import RetryableError
from pipeline.extract.batch import extract_batch
from pipeline.extract.flow import extract_routed
from pipeline.llm.base import Generation, GenerationRequest
from pipeline.settings import Settings
from pipeline.spend.routing import complexity
from pipeline.types import Provider, TaskType

pytestmark = pytest.mark.integration

OWNER = "task:refill"


class _Scripted:
    """Answers every request with a pattern of its own, but with invalid text on the first
    attempt of the interactions in ``flaky``; keeps each call's ``(id, "first" | "retry")``.
    ``fail_on_call``: that call (1-based) raises RetryableError instead."""

    provider = Provider.LOCAL
    model_name = "scripted"

    def __init__(self, flaky: Sequence[int] = (), fail_on_call: int | None = None) -> None:
        self.flaky = set(flaky)
        self.fail_on_call = fail_on_call
        self.calls: list[list[tuple[int, str]]] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.calls.append(
            [(r.interaction_id or 0, "retry" if r.temperature else "first") for r in requests]
        )
        if len(self.calls) == self.fail_on_call:
            raise RetryableError("engine went away")
        out = []
        for r in requests:
            iid = r.interaction_id or 0
            body = {"patterns": [pattern(f"Retry the broker in case {iid}")], "relationships": []}
            bad = iid in self.flaky and not r.temperature
            out.append(Generation("not json" if bad else json.dumps(body), "stop", 100, 20))
        return out


def _queue(make: Callable[..., list[int]], db: Database, n: int, key: str, **kw: Any) -> list[int]:
    ids: list[int] = make(n, key=key + "-{i}", **kw)
    with db.session(ALL_PROJECTS) as s:
        s.execute(update(Interaction).where(Interaction.id.in_(ids)).values(status="queued"))
    return ids


def _settings(**extra: Any) -> Settings:
    return Settings(  # type: ignore[call-arg]
        database_url=None, redis_url=None, extract_batch_size=4, extract_linger_s=0, **extra
    )


def _state(db: Database, ids: list[int]) -> dict[int, tuple[str, str | None, int]]:
    with db.session(ALL_PROJECTS) as s:
        rows = s.execute(
            select(
                Interaction.id, Interaction.status, Interaction.lease_owner,
                Interaction.extract_starts,
            ).where(Interaction.id.in_(ids))
        ).all()  # fmt: skip
    return {i: (status, owner, starts) for i, status, owner, starts in rows}


def _calls(db: Database) -> list[LLMCall]:
    with db.session(ALL_PROJECTS) as s:
        return list(s.scalars(select(LLMCall).order_by(LLMCall.id)).all())


def _run(db: Database, engine: _Scripted, settings: Settings, own: list[int], **kw: Any) -> Any:
    dispatcher = kw.pop("dispatcher", RecordingDispatcher(eager=False))
    summary = extract_routed(
        db=db, engine=engine, settings=settings, dispatcher=dispatcher,
        interaction_ids=own, lease_owner=OWNER, **kw,
    )  # fmt: skip
    return summary, dispatcher


def test_a_retry_rides_with_refilled_interactions_which_end_like_the_batchs_own(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    own = _queue(stored_interactions, db, 3, "own")
    others = _queue(stored_interactions, db, 4, "other")  # other tasks' work, still queued
    engine = _Scripted(flaky=[own[1]])
    summary, dispatcher = _run(db, engine, _settings(), own)
    # The claim topped the batch up to 4 with others[0]; the retry of own[1] then rode with
    # first attempts of the other three, in one call of the batch's size.
    assert engine.calls == [
        [(i, "first") for i in [*own, others[0]]],
        [(own[1], "retry"), *[(i, "first") for i in others[1:]]],
    ]
    assert (summary.claimed, summary.topped_up, summary.refilled) == (7, 1, 3)
    assert (summary.extracted, summary.failed, summary.patterns) == (7, 0, 7)
    # Extracted, lease released, starts cleared, routed (complexity stored).
    everything = own + others
    assert set(_state(db, everything).values()) == {("extracted", None, 0)}
    with db.session(ALL_PROJECTS) as s:
        routed = s.scalars(select(Interaction.complexity).where(Interaction.id.in_(others)))
        assert None not in set(routed)
    calls = _calls(db)
    refilled = [c for c in calls if c.interaction_id in others[1:]]
    assert [(c.attempt, c.batch_size, c.outcome, c.cache_hit) for c in refilled] == [
        (1, 4, "ok", False)
    ] * 3
    assert all(c.route_reason and c.route_reason.startswith("hybrid") for c in refilled)
    retry = next(c for c in calls if c.attempt == 2)
    assert retry.interaction_id == own[1] and {c.batch_id for c in calls} == {retry.batch_id}
    # What follows extraction is handed on for them too: their patterns are embedded.
    embedded = [p for name, ids in dispatcher.calls if name == "embed" for p in ids]
    assert len(embedded) == 7


def test_without_queued_work_the_retry_runs_alone(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    own = _queue(stored_interactions, db, 2, "own")
    engine = _Scripted(flaky=[own[0]])
    summary, _ = _run(db, engine, _settings(), own)
    assert engine.calls[1] == [(own[0], "retry")]
    assert (summary.extracted, summary.refilled, summary.claimed) == (2, 0, 2)


def test_an_eager_dispatcher_never_refills(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    own = _queue(stored_interactions, db, 2, "own")
    others = _queue(stored_interactions, db, 2, "other")
    engine = _Scripted(flaky=[own[0]])
    summary, _ = _run(db, engine, _settings(), own, dispatcher=RecordingDispatcher(eager=True))
    assert engine.calls[1] == [(own[0], "retry")] and summary.refilled == 0
    assert set(_state(db, others).values()) == {("queued", None, 0)}


def test_refilled_work_done_by_rule_or_by_the_cache_needs_no_engine(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    settings = _settings()
    [seen] = stored_interactions(1, key="seen-{i}", content="PR cached: retry the broker")
    extract_batch(db=db, engine=_Scripted(), settings=settings, interaction_ids=[seen])
    own = _queue(stored_interactions, db, 4, "own")
    bump = _queue(stored_interactions, db, 1, "bump", kind="github_pull_request",
                  content="Pull request #9: Bump requests from 2.31.0 to 2.32.0")  # fmt: skip
    again = _queue(stored_interactions, db, 1, "again", content="PR cached: retry the broker")
    plain = _queue(stored_interactions, db, 1, "plain")
    engine = _Scripted(flaky=[own[0]])
    summary, _ = _run(db, engine, settings, own)
    assert engine.calls[1] == [(own[0], "retry"), (plain[0], "first")]
    assert (summary.refilled, summary.extracted) == (3, 7)
    assert set(_state(db, own + bump + again + plain).values()) == {("extracted", None, 0)}
    calls = [c for c in _calls(db) if c.interaction_id in bump + again]
    assert [(c.interaction_id, c.cache_hit) for c in calls] == [(again[0], True)]  # bump: none


def test_refilled_interactions_are_released_when_the_engine_fails(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    own = _queue(stored_interactions, db, 4, "own")
    others = _queue(stored_interactions, db, 3, "other")
    engine = _Scripted(flaky=[own[0]], fail_on_call=2)
    with pytest.raises(RetryableError):
        _run(db, engine, _settings(), own)
    assert engine.calls[1] == [(own[0], "retry"), *[(i, "first") for i in others]]
    # Nothing written, every lease (own and refilled) released, no start left to count.
    assert set(_state(db, own + others).values()) == {("queued", None, 0)}


def test_the_claude_share_of_a_refill_is_published_and_released(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    own = _queue(stored_interactions, db, 3, "own")
    files = "\n".join(f"- src/module_{k}.py (+40/-12)" for k in range(15))
    hard = (
        "Pull request #5: fix the race condition and deadlock in the scheduler\n"
        "Concurrency, distributed locking, transaction isolation and performance.\n"
        f"Files changed (15):\n{files}"
    )
    [first, complex_, last] = (
        _queue(stored_interactions, db, 1, "first"),
        _queue(stored_interactions, db, 1, "hard", kind="github_pull_request", content=hard),
        _queue(stored_interactions, db, 1, "last"),
    )
    low, high = complexity("conversation 0 about retries"), complexity(hard)
    assert low < high
    settings = _settings(
        anthropic_api_key=SecretStr("sk-test"),
        complexity_thresholds={TaskType.PATTERN_EXTRACTION: (low + high) / 2},
        local_capability={TaskType.PATTERN_EXTRACTION: 0.1},
    )
    engine = _Scripted(flaky=[own[0]])
    summary, dispatcher = _run(db, engine, settings, own)
    # first[0] topped the claim up; the refill took the hard one (Claude's) and last[0].
    assert engine.calls[1] == [(own[0], "retry"), (last[0], "first")]
    assert ("claude", complex_) in dispatcher.calls
    assert (summary.to_claude, summary.refilled, summary.extracted) == (1, 2, 5)
    assert _state(db, complex_)[complex_[0]] == ("queued", None, 0)
    assert _state(db, first)[first[0]][0] == "extracted"
