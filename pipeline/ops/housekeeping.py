"""The periodic sweep (Celery beat, every minute): what a fault may have left behind.

- interactions whose extract message was lost are published again, or ``dead`` after too many
  publishes (:func:`pipeline.intake.outbox.sweep_outbox`), but only while the extract queue is
  empty (:func:`extract_backlog`);
- budget reservations whose lease lapsed (their worker died) are released
  (:func:`pipeline.spend.reservations.release_stale`);
- strategic analyses left ``pending`` (their message lost) go to the local model;
- active patterns still without an embedding (their embed message, published after the
  extraction's commit, lost with Redis; or never published, the worker dying between the two)
  get their embed task published again (:func:`republish_unembedded`).

The sweep runs on the ``housekeeping`` queue (CPU workers), not behind the extract messages, so
the GPU extract workers can scale to zero. An interaction waiting behind a long extract backlog is
not lost, though; so while extract messages are waiting (or the broker cannot say) the outbox part
holds, and the rest of the sweep goes on. Meanwhile extract tasks top their batches up with
``queued`` interactions oldest first (:mod:`pipeline.extract.claim`), lost messages included.

This work spans every project: it runs as the database owner, not under a project's row-level
security.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from sqlalchemy import func, select, update

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Pattern
from pipeline.dispatch import Dispatcher
from pipeline.errors import PipelineError
from pipeline.extract.analysis import stale_analyses
from pipeline.intake.outbox import SweepResult, sweep_outbox
from pipeline.queues import QUEUE_EXTRACT
from pipeline.settings import Settings
from pipeline.spend.reservations import release_stale

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class SweepSummary:
    """What one sweep did (counts); ``skipped_locked``: another sweep held the outbox lock;
    ``outbox_held``: extract messages were waiting (``extract_backlog`` of them; ``None``: the
    broker could not be read), so the outbox was left alone."""

    examined: int
    republished: int
    dead: int
    skipped_locked: bool
    reservations_released: int
    analyses_requeued: int
    embeds_republished: int = 0
    outbox_held: bool = False
    extract_backlog: int | None = 0


def extract_backlog(settings: Settings) -> int | None:
    """Messages waiting on the extract queue (Redis ``LLEN`` of ``extract.local``): 0 without a
    broker (``redis_url`` unset: tasks run in process), ``None`` when Redis cannot be read."""
    if not settings.redis_url:
        return 0
    import redis

    from pipeline.ops.metrics import read_queue_lengths

    try:
        return read_queue_lengths(settings.redis_url, [QUEUE_EXTRACT])[QUEUE_EXTRACT]
    except redis.RedisError as exc:
        log.warning("sweep_backlog_unreadable", error=str(exc))
        return None


def sweep(
    *,
    db: Database,
    dispatcher: Dispatcher,
    settings: Settings,
    backlog: Callable[[Settings], int | None] = extract_backlog,
) -> SweepSummary:
    """Run one sweep (see the module docstring). ``backlog`` reads the extract queue's length
    (:func:`extract_backlog`); the outbox is swept only when it returns 0.

    Raises:
        RetryableError: the database is unavailable (the broker's failures are counted by the
            outbox sweep and left for the next one).
    """
    waiting = backlog(settings)
    held = waiting != 0
    if held:
        log.info("sweep_outbox_held", extract_backlog=waiting)
        result = SweepResult()
    else:
        result = sweep_outbox(db=db, dispatcher=dispatcher, settings=settings)
    released = release_stale(db)
    stalled = stale_analyses(
        db, older_than_s=settings.budget_reservation_timeout_s, limit=settings.outbox_sweep_limit
    )
    if stalled:
        dispatcher.analyze_local(stalled, dict.fromkeys(stalled, "stalled analysis re-queued"))
    embeds = republish_unembedded(db=db, dispatcher=dispatcher, settings=settings)
    return SweepSummary(
        examined=result.examined,
        republished=len(result.republished) - len(result.publish_failed),
        dead=len(result.dead),
        skipped_locked=result.skipped_locked,
        reservations_released=released,
        analyses_requeued=len(stalled),
        embeds_republished=embeds,
        outbox_held=held,
        extract_backlog=waiting,
    )


def republish_unembedded(*, db: Database, dispatcher: Dispatcher, settings: Settings) -> int:
    """Publish the embed task again for active patterns whose ``embedding`` is still NULL
    ``embed_stale_after_s`` seconds after their ``updated_at`` (their creation, or the last such
    re-publish): up to ``outbox_sweep_limit`` of them, oldest first, in tasks of
    ``embedding_batch_size`` patterns. Returns how many were published.

    Each published batch gets ``updated_at`` = now, so the next sweeps leave it alone for
    another ``embed_stale_after_s`` (the embed task may be queued behind a backlog). Publishing
    happens outside any transaction (an eager dispatcher embeds in this process, and would wait
    on a row lock held here). A publish that fails (broker down) is logged and the pass stops;
    the rest waits for the next sweep. A pattern published twice is harmless: embedding skips
    patterns that have one. Ages are measured with the database clock.

    Raises:
        RetryableError: the database is unavailable.
    """
    cutoff = func.now() - dt.timedelta(seconds=settings.embed_stale_after_s)
    with db.session(ALL_PROJECTS) as session:
        stale: list[uuid.UUID] = list(
            session.scalars(
                select(Pattern.id)
                .where(
                    Pattern.is_active.is_(True),
                    Pattern.embedding.is_(None),
                    Pattern.updated_at < cutoff,
                )
                .order_by(Pattern.updated_at, Pattern.id)
                .limit(settings.outbox_sweep_limit)
            ).all()
        )
    published = 0
    for start in range(0, len(stale), settings.embedding_batch_size):
        batch = stale[start : start + settings.embedding_batch_size]
        try:
            dispatcher.embed(batch)
        except PipelineError as exc:
            log.warning("sweep_embed_publish_failed", patterns=len(batch), error=str(exc))
            break
        with db.session(ALL_PROJECTS) as session:
            session.execute(
                update(Pattern).where(Pattern.id.in_(batch)).values(updated_at=func.now())
            )
        published += len(batch)
    if stale:
        log.info("unembedded_republished", found=len(stale), published=published)
    return published
