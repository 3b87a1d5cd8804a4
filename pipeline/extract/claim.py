"""Claiming an extract task's batch under a lease, topped up from the queue.

Under webhook traffic every delivery publishes an extract task of one interaction, and a worker
takes one task at a time: the model would see one prompt per call, which is several times slower
than a full batch (``bench/extract_throughput.py``). So an extract task claims its own
interactions and, while it holds fewer than ``extract_batch_size``, tops the batch up with other
``queued`` interactions that were never routed (``complexity IS NULL``), oldest first, waiting at
most ``extract_linger_s`` for more to arrive. Their own messages later find them done, or held by
a live lease, and do nothing.

The claim is a lease on the rows (``interactions.lease_owner``, ``lease_expires_at``), taken
with ``SELECT ... FOR UPDATE SKIP LOCKED`` and set in the same transaction, so two workers never
claim the same interaction while its lease lives, and nothing waits on another worker's locks.
The owner is the task's id: a task that Celery delivers again (its worker was killed; the
message was not acknowledged) takes back what it held, and a lease that lapses
(``extract_lease_s``) frees the work of a task that will not come back, for the outbox sweeper to
publish again. The effect stays exactly once either way: extraction writes only interactions that
are still waiting, under a row lock (:mod:`pipeline.extract.write`).

Poison interactions: with ``acks_late`` and ``task_reject_on_worker_lost``, an interaction that
kills its worker (OOM, segfault) would be delivered again forever. So a claim adds 1 to
``interactions.extract_starts`` and :func:`release` (which a task reaches whenever its batch
returned or raised, retries included) sets it back to 0: only starts that a killed worker left
behind accumulate. An interaction with such a start is a suspect; a batch holds at most one
suspect (the others are set aside, unleased, for the task to publish again one per task, and are
never topped up), so innocent batch-mates of a poison interaction are cleared one by one. One
claimed with ``max_starts`` such starts already goes ``dead`` with the reason instead.

Why not celery-batches: it buffers messages inside one worker process and acknowledges them
when the batch is flushed, which would need ``acks_late`` per buffered request and still gives
nothing across workers; claiming rows in Postgres works across workers and processes, keeps
one message per delivery, and lets a task pick up work whose message is still in the queue.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import ColumnElement, func, or_, select, update
from sqlalchemy.orm import Session

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction
from pipeline.db.status import WAITING_STATUSES, InteractionStatus

#: Seconds between looks at the queue while lingering.
LINGER_POLL_S = 0.05


def _lease_free(owner: str | None = None) -> ColumnElement[bool]:
    """No live lease (by the database clock), or one held by ``owner`` when given."""
    free = or_(Interaction.lease_expires_at.is_(None), Interaction.lease_expires_at < func.now())
    return or_(free, Interaction.lease_owner == owner) if owner is not None else free


@dataclass
class Claim:
    """What a claim did. ``ids``: claimed (leased, ``extract_starts`` + 1), ascending;
    ``set_aside``: suspects left unclaimed and unleased, to publish again one per task;
    ``dead``: interactions marked ``dead`` for too many starts without a clean finish."""

    ids: list[int] = field(default_factory=list)
    set_aside: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)


def poison_reason(starts: int, max_starts: int) -> str:
    """The ``last_error`` of an interaction that went dead after ``starts`` extract starts that
    no clean finish followed (limit ``max_starts``)."""
    return (
        f"worker lost {starts} times while extracting it (limit PATTERNS_EXTRACT_MAX_STARTS="
        f"{max_starts}); not extracted again"
    )


def _take(session: Session, ids: Sequence[int], owner: str, lease_s: float) -> None:
    if ids:
        session.execute(
            update(Interaction)
            .where(Interaction.id.in_(list(ids)))
            .values(
                lease_owner=owner,
                lease_expires_at=func.now() + dt.timedelta(seconds=lease_s),
                extract_starts=Interaction.extract_starts + 1,
            )
        )


def _sort_out(
    session: Session, rows: Sequence[tuple[int, int]], max_starts: int | None, out: Claim
) -> list[int]:
    """Of the locked ``(id, extract_starts)`` rows, mark the ones at ``max_starts`` dead, set
    aside every suspect (``extract_starts > 0``) but the first, and return the rest's ids."""
    if max_starts is None:
        return [iid for iid, _ in rows]
    keep: list[int] = []
    suspect_kept = False
    for iid, starts in rows:
        if starts >= max_starts:
            session.execute(
                update(Interaction)
                .where(Interaction.id == iid)
                .values(
                    status=InteractionStatus.DEAD.value,
                    last_error=poison_reason(starts, max_starts),
                    lease_owner=None,
                    lease_expires_at=None,
                    processed_at=func.now(),
                    updated_at=func.now(),
                )
            )
            out.dead.append(iid)
        elif starts > 0 and suspect_kept:
            out.set_aside.append(iid)
        else:
            suspect_kept = suspect_kept or starts > 0
            keep.append(iid)
    if out.set_aside:
        session.execute(
            update(Interaction)
            .where(Interaction.id.in_(out.set_aside))
            .values(lease_owner=None, lease_expires_at=None)
        )
    return keep


def claim_own(
    db: Database,
    owner: str,
    interaction_ids: Sequence[int],
    lease_s: float,
    max_starts: int | None = None,
) -> Claim:
    """Lease the given interactions that are still waiting (``received``/``queued``) and not
    held by another live lease, plus any interaction ``owner`` already holds (a task delivered
    again takes back what it had topped up). Rows another transaction has locked are waited
    for (a short write: the publisher marking them ``queued``, another task's claim) and then
    judged as that transaction left them.

    Args:
        owner: the lease holder's token (the Celery task id).
        lease_s: seconds the lease lasts.
        max_starts: with it, poison handling (module docstring): at most one suspect is
            claimed, others are set aside, those with ``max_starts`` starts go dead.

    Returns:
        The :class:`Claim`.
    """
    waiting = Interaction.status.in_([s.value for s in WAITING_STATUSES])
    out = Claim()
    with db.session(ALL_PROJECTS) as session:
        rows = session.execute(
            select(Interaction.id, Interaction.extract_starts)
            .where(
                or_(Interaction.id.in_(list(interaction_ids)), Interaction.lease_owner == owner),
                waiting,
                _lease_free(owner),
            )
            .order_by(Interaction.id)
            # Wait for locks here, never skip: the publisher marking these rows queued holds
            # them for a moment, and a skipped own interaction would wait for the sweeper.
            .with_for_update()
        ).all()
        out.ids = _sort_out(session, [(int(i), int(n)) for i, n in rows], max_starts, out)
        _take(session, out.ids, owner, lease_s)
    return out


def claim_queued(db: Database, owner: str, limit: int, lease_s: float) -> list[int]:
    """Lease up to ``limit`` other ``queued`` interactions that were never routed
    (``complexity IS NULL``) and hold no live lease, oldest (lowest id) first; rows another
    transaction has locked are skipped. Returns the claimed ids, ascending."""
    if limit <= 0:
        return []
    with db.session(ALL_PROJECTS) as session:
        ids = list(
            session.scalars(
                select(Interaction.id)
                .where(
                    Interaction.status == InteractionStatus.QUEUED.value,
                    Interaction.complexity.is_(None),
                    # Suspects (a start that no clean finish followed) only with their own task.
                    Interaction.extract_starts == 0,
                    _lease_free(),
                )
                .order_by(Interaction.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
        )
        _take(session, ids, owner, lease_s)
    return ids


def claim_batch(
    db: Database,
    owner: str,
    interaction_ids: Sequence[int],
    *,
    batch_size: int,
    linger_s: float,
    lease_s: float,
    top_up: bool = True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    max_starts: int | None = None,
) -> Claim:
    """Claim an extract task's batch: its own waiting interactions (:func:`claim_own`) and,
    with ``top_up``, other queued ones (:func:`claim_queued`) until the batch holds
    ``batch_size``. While it holds at least one but fewer than ``batch_size``, it looks again
    every :data:`LINGER_POLL_S` for up to ``linger_s`` seconds. A task with nothing to do
    (all its interactions done or held elsewhere, none queued) returns no ids at once.
    ``max_starts``: poison handling of its own interactions (:func:`claim_own`).

    Returns:
        The :class:`Claim`; release its ids with :func:`release`, publish its ``set_aside``.
    """
    out = claim_own(db, owner, interaction_ids, lease_s, max_starts)
    claimed = out.ids
    if top_up:
        claimed += claim_queued(db, owner, batch_size - len(claimed), lease_s)
        deadline = clock() + linger_s
        while claimed and len(claimed) < batch_size and clock() < deadline:
            sleep(min(LINGER_POLL_S, max(0.0, deadline - clock())))
            claimed += claim_queued(db, owner, batch_size - len(claimed), lease_s)
    out.ids = sorted(claimed)
    return out


def release(db: Database, owner: str, interaction_ids: Sequence[int]) -> None:
    """Drop ``owner``'s leases on the interactions (done, handed to Claude, or given back) and
    clear their ``extract_starts``: the task got through its batch (returned or raised)."""
    if not interaction_ids:
        return
    with db.session(ALL_PROJECTS) as session:
        session.execute(
            update(Interaction)
            .where(Interaction.id.in_(list(interaction_ids)), Interaction.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None, extract_starts=0)
        )
