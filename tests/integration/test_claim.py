"""Claiming extract batches under a lease (pipeline.extract.claim) on the embedded Postgres:
top-up from the queue, concurrent claimers, leases that lapse, and the outbox sweeper leaving
held work alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import select, text, update

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction
from pipeline.extract.claim import claim_batch, claim_own, claim_queued, release
from pipeline.intake.outbox import sweep_outbox
from pipeline.settings import Settings

pytestmark = pytest.mark.integration

LEASE_S = 600.0


def _set(db: Database, ids: list[int], **values: Any) -> None:
    with db.session(ALL_PROJECTS) as s:
        s.execute(update(Interaction).where(Interaction.id.in_(ids)).values(**values))


def _leases(db: Database, ids: list[int]) -> dict[int, str | None]:
    with db.session(ALL_PROJECTS) as s:
        return dict(
            s.execute(
                select(Interaction.id, Interaction.lease_owner).where(Interaction.id.in_(ids))
            ).all()
        )


def _queued(make: Callable[..., list[int]], n: int, key: str = "q-{i}") -> list[int]:
    ids: list[int] = make(n, key=key, content=key + " text")
    return ids


def test_a_short_batch_is_topped_up_with_queued_never_routed_interactions_oldest_first(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    ids = _queued(stored_interactions, 8)
    _set(db, ids, status="queued")
    _set(db, ids[1:2], complexity=0.9)  # routed already (Claude's): not topped up
    _set(db, ids[2:3], status="received")  # not published yet: not topped up
    _set(db, ids[3:4], status="extracted")  # done
    own = [ids[7]]
    claimed = claim_batch(db, "task:a", own, batch_size=4, linger_s=0, lease_s=LEASE_S).ids
    assert claimed == sorted([ids[0], ids[4], ids[5], ids[7]])
    leases = _leases(db, ids)
    assert {i for i, o in leases.items() if o == "task:a"} == set(claimed)
    # Another task finds its own interaction held by a live lease: nothing to do, at once.
    start = time.monotonic()
    assert claim_batch(db, "task:b", [ids[0]], batch_size=4, linger_s=5, lease_s=LEASE_S).ids == [
        ids[6]
    ]
    assert time.monotonic() - start >= 4.5  # it held ids[6] and lingered for more
    assert claim_batch(db, "task:c", [ids[0]], batch_size=4, linger_s=5, lease_s=LEASE_S).ids == []
    release(db, "task:a", claimed)
    assert all(_leases(db, claimed)[i] is None for i in claimed)


def test_lingering_picks_up_interactions_queued_while_it_waits(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    first = _queued(stored_interactions, 1, key="first-{i}")
    _set(db, first, status="queued")
    later = _queued(stored_interactions, 3, key="later-{i}")

    def arrive() -> None:
        time.sleep(0.3)
        _set(db, later, status="queued")

    thread = threading.Thread(target=arrive)
    thread.start()
    start = time.monotonic()
    claimed = claim_batch(db, "task:l", first, batch_size=4, linger_s=10, lease_s=LEASE_S).ids
    elapsed = time.monotonic() - start
    thread.join()
    assert claimed == sorted(first + later)
    assert 0.25 < elapsed < 5  # it waited for them, and stopped once the batch was full


def test_concurrent_claimers_never_share_an_interaction(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    ids = _queued(stored_interactions, 60)
    _set(db, ids, status="queued")
    barrier = threading.Barrier(6)
    results: dict[int, list[int]] = {}

    def claimer(k: int) -> None:
        barrier.wait()
        got: list[int] = []
        while batch := claim_queued(db, f"task:{k}", 4, LEASE_S):
            got += batch
        results[k] = got

    threads = [threading.Thread(target=claimer, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    everything = [i for got in results.values() for i in got]
    assert sorted(everything) == sorted(ids)  # each claimed once, none lost
    assert sum(1 for got in results.values() if got) >= 2  # they did run side by side


def test_a_task_delivered_again_takes_back_what_it_held_and_a_lapsed_lease_is_free(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    ids = _queued(stored_interactions, 4)
    _set(db, ids, status="queued")
    held = claim_batch(db, "task:k", ids[:1], batch_size=4, linger_s=0, lease_s=LEASE_S).ids
    assert held == ids
    # The worker died: the same task (same id) comes back with only its own id.
    assert claim_own(db, "task:k", ids[:1], LEASE_S).ids == ids
    assert claim_own(db, "task:other", ids, LEASE_S).ids == []
    with db.session(ALL_PROJECTS) as s:
        s.execute(text("UPDATE interactions SET lease_expires_at = now() - interval '1 second'"))
    assert claim_own(db, "task:other", ids[2:], LEASE_S).ids == ids[2:]


def test_the_outbox_sweeper_leaves_interactions_under_a_live_lease(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    ids = _queued(stored_interactions, 2)
    _set(db, ids, status="queued")
    claim_own(db, "task:s", ids[:1], LEASE_S)
    with db.session(ALL_PROJECTS) as s:
        s.execute(text("UPDATE interactions SET queued_at = now() - interval '2 hours'"))

    class Recorder:
        eager = False
        published: list[list[int]] = []

        def extract(self, interaction_ids: list[int], **_: Any) -> None:
            self.published.append(list(interaction_ids))

    recorder = Recorder()
    settings = Settings(outbox_stale_after_s=60, extract_batch_size=8)  # type: ignore[call-arg]
    result = sweep_outbox(db=db, dispatcher=recorder, settings=settings)  # type: ignore[arg-type]
    assert result.republished == ids[1:]
    assert recorder.published == [ids[1:]]


def test_a_task_waits_for_its_own_interactions_while_the_publisher_holds_them(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    """The publisher marks a batch ``queued`` after publishing it; a worker that takes the task
    at once meets the rows still locked by that UPDATE. It must wait and claim them, not skip
    them (they would then wait for the outbox sweeper, minutes later)."""
    ids = _queued(stored_interactions, 3)
    locked = threading.Event()

    def publisher() -> None:
        with db.session(ALL_PROJECTS) as s:
            s.execute(update(Interaction).where(Interaction.id.in_(ids)).values(status="queued"))
            locked.set()
            time.sleep(0.5)

    thread = threading.Thread(target=publisher)
    thread.start()
    assert locked.wait(10)
    claimed = claim_batch(db, "task:p", ids, batch_size=3, linger_s=0, lease_s=LEASE_S)
    thread.join()
    assert claimed.ids == ids
