"""The outbox: publishing stored interactions' extract tasks, and the sweeper that re-publishes
what stalled and gives up on what keeps stalling.

Every interaction is committed before its extract task is published (``received``), marked
``queued`` with ``queued_at`` when published, and ``attempts`` counts the publishes. A broker
message can still be lost (Redis restarted without persistence, a publish that failed after the
commit, a message dropped by hand). The sweeper, run every minute by Celery beat, finds
interactions still ``received``/``queued`` more than ``outbox_stale_after_s`` after their last
publish (or their creation, when never published), and not held by a live extract lease
(:mod:`pipeline.extract.claim`), and decides with :func:`sweep_decision`:
publish again, or after ``outbox_max_attempts`` publishes mark them ``dead`` with the reason.

One sweep at a time: a transaction-level advisory lock (:data:`SWEEP_LOCK_KEY`) makes a second
concurrent sweep return at once, and the claimed rows get a fresh ``queued_at`` inside that
transaction, so no other sweep can pick them up again before ``outbox_stale_after_s`` has passed.
Re-publishing is harmless when the first message was only slow: extraction skips interactions
already in a terminal status and its writes are idempotent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from sqlalchemy import Exists, case, exists, func, or_, select, update

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import BudgetReservation, Interaction
from pipeline.db.status import WAITING_STATUSES, InteractionStatus, ReservationStatus
from pipeline.dispatch import Dispatcher
from pipeline.errors import PipelineError
from pipeline.settings import Settings
from pipeline.types import ClaudeMode, Progress

log = structlog.get_logger(__name__)


def pending_ids(
    db: Database, interaction_ids: Sequence[int],
    statuses: Sequence[InteractionStatus] = WAITING_STATUSES,
) -> list[int]:  # fmt: skip
    """The given interactions still waiting for extraction (by default ``received`` or
    ``queued``; ``statuses`` narrows it), by id."""
    with db.session(ALL_PROJECTS) as session:
        return list(
            session.scalars(
                select(Interaction.id)
                .where(
                    Interaction.id.in_(list(interaction_ids)),
                    Interaction.status.in_([s.value for s in statuses]),
                )
                .order_by(Interaction.id)
            ).all()
        )


def publish_pending(
    db: Database, dispatcher: Dispatcher, interaction_ids: Sequence[int], batch_size: int,
    progress: Progress | None = None, statuses: Sequence[InteractionStatus] = WAITING_STATUSES,
    check: bool = True, claude_mode: ClaudeMode = ClaudeMode.SYNC,
) -> int:  # fmt: skip
    """Publish one extract task per ``batch_size`` of the given interactions not yet done
    (status in ``statuses``: ``patterns ingest`` passes only ``received``, leaving ``queued``
    ones to the outbox sweeper). ``check=False`` skips reading the statuses first, for callers
    that have just stored the interactions (the HTTP API).

    Each batch is marked ``queued`` (``queued_at`` = now) after it is published, only where it
    is still ``received`` or ``queued`` (in eager mode the task has already finished it), and
    every published interaction's ``attempts`` grows by one. ``claude_mode`` goes with the task
    (``batch``: Claude work through the Message Batches API). Returns the number published.

    Raises:
        RetryableError: the broker cannot be reached (the batch stays as it was).
    """
    pending = pending_ids(db, interaction_ids, statuses) if check else list(interaction_ids)
    waiting = Interaction.status.in_([s.value for s in WAITING_STATUSES])
    done = 0
    for start in range(0, len(pending), batch_size):
        batch = list(pending[start : start + batch_size])
        dispatcher.extract(batch, claude_mode=claude_mode)
        with db.session(ALL_PROJECTS) as session:
            # Every publish is a delivery attempt, whatever the status (eager mode finished it);
            # only waiting ones become queued. One statement: this runs in the request path.
            session.execute(
                update(Interaction)
                .where(Interaction.id.in_(batch))
                .values(
                    attempts=Interaction.attempts + 1,
                    status=case(
                        (waiting, InteractionStatus.QUEUED.value), else_=Interaction.status
                    ),
                    queued_at=case((waiting, func.now()), else_=Interaction.queued_at),
                    updated_at=case((waiting, func.now()), else_=Interaction.updated_at),
                )
            )
        done += len(batch)
        if progress:
            progress("extract", done, len(pending))
    return len(pending)


#: Key of the transaction-level advisory lock that serialises sweeps ("swep").
SWEEP_LOCK_KEY = 0x7377_6570


@dataclass(frozen=True)
class Wait:
    """Not stale yet: leave it."""


@dataclass(frozen=True)
class Republish:
    """Stale, attempts left: publish its extract task again."""


@dataclass(frozen=True)
class Dead:
    """Stale after the last allowed attempt: give up; ``reason`` goes to ``last_error``."""

    reason: str


SweepDecision = Wait | Republish | Dead


def sweep_decision(attempts: int, age_s: float, settings: Settings) -> SweepDecision:
    """What to do with an interaction still ``received``/``queued``.

    Args:
        attempts: how often its extract task was published so far (``interactions.attempts``).
        age_s: seconds since its last publish (``queued_at``), or since it was stored when it
            was never published.
        settings: ``outbox_stale_after_s`` (age from which it counts as stalled) and
            ``outbox_max_attempts`` (publishes after which a stalled interaction is dead).

    Returns:
        :class:`Wait` when ``age_s < outbox_stale_after_s``; else :class:`Dead` when
        ``attempts >= outbox_max_attempts``; else :class:`Republish`.
    """
    if age_s < settings.outbox_stale_after_s:
        return Wait()
    if attempts >= settings.outbox_max_attempts:
        return Dead(
            f"not extracted after {attempts} delivery attempts "
            f"(last one {age_s:.0f} s ago; limit PATTERNS_OUTBOX_MAX_ATTEMPTS="
            f"{settings.outbox_max_attempts})"
        )
    return Republish()


@dataclass
class SweepResult:
    """What one sweep did. ``skipped_locked``: another sweep held the lock; nothing was done."""

    examined: int = 0
    republished: list[int] = field(default_factory=list)
    dead: list[int] = field(default_factory=list)
    publish_failed: list[int] = field(default_factory=list)
    skipped_locked: bool = False


def _live_reservation() -> Exists:
    """A ``reserved`` budget reservation of the interaction whose lease has not lapsed."""
    return exists().where(
        BudgetReservation.interaction_id == Interaction.id,
        BudgetReservation.status == ReservationStatus.RESERVED.value,
        BudgetReservation.lease_expires_at >= func.now(),
    )


def sweep_outbox(*, db: Database, dispatcher: Dispatcher, settings: Settings) -> SweepResult:
    """Run one sweep: examine up to ``outbox_sweep_limit`` stale interactions (oldest first),
    mark the hopeless ones ``dead`` and publish the others again in batches of
    ``extract_batch_size`` (each publish counted in ``attempts``).

    A publish that fails (broker down) is logged and left for the next sweep; it is not counted
    as an attempt. Ages are measured with the database clock.
    """
    out = SweepResult()
    last_publish = func.coalesce(Interaction.queued_at, Interaction.created_at)
    with db.session(ALL_PROJECTS) as session:
        if not session.scalar(select(func.pg_try_advisory_xact_lock(SWEEP_LOCK_KEY))):
            out.skipped_locked = True
            return out
        rows = session.execute(
            select(
                Interaction.id,
                Interaction.attempts,
                func.extract("epoch", func.now() - last_publish),
            )
            .where(
                Interaction.status.in_([s.value for s in WAITING_STATUSES]),
                last_publish < func.now() - dt.timedelta(seconds=settings.outbox_stale_after_s),
                # Held by a live extract task (pipeline.extract.claim): it is being worked on.
                or_(
                    Interaction.lease_expires_at.is_(None),
                    Interaction.lease_expires_at < func.now(),
                ),
                # A Claude call on it is in flight: its budget reservation's lease is renewed
                # while the call runs (pipeline.spend.leases), and lapses if its worker died.
                ~_live_reservation(),
            )
            .order_by(last_publish, Interaction.id)
            .limit(settings.outbox_sweep_limit)
            .with_for_update(of=Interaction, skip_locked=True)
        ).all()
        out.examined = len(rows)
        dead: dict[int, str] = {}
        for iid, attempts, age in rows:
            decision = sweep_decision(int(attempts), float(age), settings)
            if isinstance(decision, Dead):
                dead[iid] = decision.reason
            elif isinstance(decision, Republish):
                out.republished.append(iid)
        for iid, reason in dead.items():
            session.execute(
                update(Interaction)
                .where(Interaction.id == iid)
                .values(
                    status=InteractionStatus.DEAD.value,
                    last_error=reason,
                    processed_at=func.now(),
                    updated_at=func.now(),
                )
            )
        out.dead = sorted(dead)
        if out.republished:
            # Claim: a concurrent sweep (after this commit) sees them as fresh.
            session.execute(
                update(Interaction)
                .where(Interaction.id.in_(out.republished))
                .values(queued_at=func.now(), updated_at=func.now())
            )
    for start in range(0, len(out.republished), settings.extract_batch_size):
        batch = out.republished[start : start + settings.extract_batch_size]
        try:
            publish_pending(db, dispatcher, batch, settings.extract_batch_size)
        except PipelineError as exc:
            log.warning("sweep_publish_failed", interactions=batch, error=str(exc))
            out.publish_failed.extend(batch)
    if out.examined:
        log.info(
            "outbox_swept",
            examined=out.examined,
            republished=len(out.republished) - len(out.publish_failed),
            dead=len(out.dead),
            publish_failed=len(out.publish_failed),
        )
    return out


def publish_new(
    db: Database, dispatcher: Dispatcher | None, interaction_ids: Sequence[int], batch_size: int
) -> bool:
    """Publish interactions a request has just stored (the request path: no status read).

    Returns whether they were published. A broker failure is logged and left to the sweeper
    (the interactions stay ``received``): a request never fails because Redis is down. Without a
    dispatcher (no broker configured) nothing is published.
    """
    if not interaction_ids or dispatcher is None:
        return False
    try:
        publish_pending(db, dispatcher, interaction_ids, batch_size, check=False)
    except PipelineError as exc:
        log.warning("publish_failed_left_to_sweeper", interactions=list(interaction_ids),
                    error=str(exc))  # fmt: skip
        return False
    return True
