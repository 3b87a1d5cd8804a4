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

Why not celery-batches: it buffers messages inside one worker process and acknowledges them
when the batch is flushed, which would need ``acks_late`` per buffered request and still gives
nothing across workers; claiming rows in Postgres works across workers and processes, keeps
one message per delivery, and lets a task pick up work whose message is still in the queue.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence

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


def _take(session: Session, ids: Sequence[int], owner: str, lease_s: float) -> None:
    if ids:
        session.execute(
            update(Interaction)
            .where(Interaction.id.in_(list(ids)))
            .values(
                lease_owner=owner,
                lease_expires_at=func.now() + dt.timedelta(seconds=lease_s),
            )
        )


def claim_own(
    db: Database, owner: str, interaction_ids: Sequence[int], lease_s: float
) -> list[int]:
    """Lease the given interactions that are still waiting (``received``/``queued``) and not
    held by another live lease, plus any interaction ``owner`` already holds (a task delivered
    again takes back what it had topped up). Returns the claimed ids, ascending.

    Args:
        owner: the lease holder's token (the Celery task id).
        lease_s: seconds the lease lasts.
    """
    waiting = Interaction.status.in_([s.value for s in WAITING_STATUSES])
    with db.session(ALL_PROJECTS) as session:
        ids = list(
            session.scalars(
                select(Interaction.id)
                .where(
                    or_(
                        Interaction.id.in_(list(interaction_ids)), Interaction.lease_owner == owner
                    ),
                    waiting,
                    _lease_free(owner),
                )
                .order_by(Interaction.id)
                .with_for_update(skip_locked=True)
            ).all()
        )
        _take(session, ids, owner, lease_s)
    return ids


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
) -> list[int]:
    """Claim an extract task's batch: its own waiting interactions (:func:`claim_own`) and,
    with ``top_up``, other queued ones (:func:`claim_queued`) until the batch holds
    ``batch_size``. While it holds at least one but fewer than ``batch_size``, it looks again
    every :data:`LINGER_POLL_S` for up to ``linger_s`` seconds. A task with nothing to do
    (all its interactions done or held elsewhere, none queued) returns ``[]`` at once.

    Returns:
        The claimed interaction ids, ascending; release them with :func:`release`.
    """
    claimed = claim_own(db, owner, interaction_ids, lease_s)
    if not top_up:
        return claimed
    claimed += claim_queued(db, owner, batch_size - len(claimed), lease_s)
    deadline = clock() + linger_s
    while claimed and len(claimed) < batch_size and clock() < deadline:
        sleep(min(LINGER_POLL_S, max(0.0, deadline - clock())))
        claimed += claim_queued(db, owner, batch_size - len(claimed), lease_s)
    return sorted(claimed)


def release(db: Database, owner: str, interaction_ids: Sequence[int]) -> None:
    """Drop ``owner``'s leases on the interactions (done, handed to Claude, or given back)."""
    if not interaction_ids:
        return
    with db.session(ALL_PROJECTS) as session:
        session.execute(
            update(Interaction)
            .where(Interaction.id.in_(list(interaction_ids)), Interaction.lease_owner == owner)
            .values(lease_owner=None, lease_expires_at=None)
        )
