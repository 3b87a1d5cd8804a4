"""Poison extract tasks (issue 14): an interaction whose worker is killed while extracting it is
not delivered forever. Claims count starts (``interactions.extract_starts``), clean releases
clear them, and an interaction claimed with ``max_starts`` crashed starts goes ``dead``; its
batch-mates are set aside one per task and then extracted."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import select, update
from support.dispatch import RecordingDispatcher
from support.replay_llm import ReplayLLM, pattern

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction
from pipeline.extract.claim import claim_batch, claim_own, release
from pipeline.extract.flow import extract_routed
from pipeline.settings import Settings

pytestmark = pytest.mark.integration

LEASE_S = 600.0
MAX = 3


def _rows(db: Database, ids: list[int]) -> dict[int, tuple[str, int, str | None]]:
    with db.session(ALL_PROJECTS) as s:
        rows = s.execute(
            select(
                Interaction.id,
                Interaction.status,
                Interaction.extract_starts,
                Interaction.last_error,
            ).where(Interaction.id.in_(ids))
        ).all()
    return {i: (status, starts, err) for i, status, starts, err in rows}


def _queue(db: Database, make: Callable[..., list[int]], n: int, key: str) -> list[int]:
    ids: list[int] = make(n, key=key + "-{i}", content="PR {i}: " + key + " retry the broker")
    with db.session(ALL_PROJECTS) as s:
        s.execute(update(Interaction).where(Interaction.id.in_(ids)).values(status="queued"))
    return ids


def test_claims_without_release_make_it_dead_after_the_limit(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    [iid] = _queue(db, stored_interactions, 1, "crash")
    for n in range(1, MAX + 1):  # the worker is killed each time: Celery delivers it again
        assert claim_own(db, "task:p", [iid], LEASE_S, MAX).ids == [iid]
        assert _rows(db, [iid])[iid][:2] == ("queued", n)
    claim = claim_own(db, "task:p", [iid], LEASE_S, MAX)
    assert (claim.ids, claim.dead) == ([], [iid])
    status, starts, error = _rows(db, [iid])[iid]
    assert status == "dead" and starts == MAX
    assert error is not None and f"worker lost {MAX} times while extracting it" in error


def test_claims_followed_by_release_never_go_dead(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    ids = _queue(db, stored_interactions, 2, "clean")
    for k in range(3 * MAX):  # retried, or topped up by one task after another: clean finishes
        claim = claim_batch(
            db, f"task:{k}", ids, batch_size=4, linger_s=0, lease_s=LEASE_S, max_starts=MAX
        )
        assert claim.ids == ids and not claim.dead and not claim.set_aside
        release(db, f"task:{k}", claim.ids)
    assert {r[:2] for r in _rows(db, ids).values()} == {("queued", 0)}


def test_one_suspect_per_batch_and_the_rest_of_the_batch_goes_on(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    ids = _queue(db, stored_interactions, 3, "batch")
    first = claim_own(db, "task:b", ids, LEASE_S, MAX)  # the worker dies: all three suspects
    assert first.ids == ids
    again = claim_own(db, "task:b", ids, LEASE_S, MAX)  # delivered again
    assert (again.ids, again.set_aside) == (ids[:1], ids[1:])
    # The set-aside ones are free for their own task, and never topped up by another.
    topping = claim_batch(db, "task:x", [], batch_size=4, linger_s=0, lease_s=LEASE_S)
    assert topping.ids == []
    assert claim_own(db, "task:c", ids[1:2], LEASE_S, MAX).ids == ids[1:2]


def test_the_task_marks_the_poison_dead_and_extracts_the_rest_of_its_batch(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    ids = _queue(db, stored_interactions, 3, "flow")
    poison = ids[0]
    with db.session(ALL_PROJECTS) as s:  # killed MAX times with it; the others cleared since
        s.execute(update(Interaction).where(Interaction.id == poison).values(extract_starts=MAX))
    settings = Settings(  # type: ignore[call-arg]
        database_url=None, redis_url=None, extract_max_starts=MAX, extract_linger_s=0
    )
    llm = ReplayLLM(
        {f"PR {i}:": {"patterns": [pattern(f"Retry {i}")], "relationships": []} for i in range(3)}
    )
    dispatcher = RecordingDispatcher(eager=False)
    summary = extract_routed(
        db=db, engine=llm, settings=settings, dispatcher=dispatcher,
        interaction_ids=ids, route=False, lease_owner="task:f",
    )  # fmt: skip
    assert (summary.dead, summary.extracted, summary.failed) == (1, 2, 0)
    rows = _rows(db, ids)
    assert rows[poison][0] == "dead"
    assert {rows[i][:2] for i in ids[1:]} == {("extracted", 0)}
