"""The periodic sweep (Celery beat, every minute): what a fault may have left behind.

- interactions whose extract message was lost are published again, or ``dead`` after too many
  publishes (:func:`pipeline.intake.outbox.sweep_outbox`);
- budget reservations whose worker died are released
  (:func:`pipeline.spend.reservations.release_stale`);
- strategic analyses left ``pending`` (their message lost) go to the local model.

This work spans every project: it runs as the database owner, not under a project's row-level
security.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.db.engine import Database
from pipeline.dispatch import Dispatcher
from pipeline.extract.analysis import stale_analyses
from pipeline.intake.outbox import sweep_outbox
from pipeline.settings import Settings
from pipeline.spend.reservations import release_stale


@dataclass(frozen=True)
class SweepSummary:
    """What one sweep did (counts); ``skipped_locked``: another sweep held the outbox lock."""

    examined: int
    republished: int
    dead: int
    skipped_locked: bool
    reservations_released: int
    analyses_requeued: int


def sweep(*, db: Database, dispatcher: Dispatcher, settings: Settings) -> SweepSummary:
    """Run one sweep (see the module docstring).

    Raises:
        RetryableError: the database is unavailable (the broker's failures are counted by the
            outbox sweep and left for the next one).
    """
    result = sweep_outbox(db=db, dispatcher=dispatcher, settings=settings)
    released = release_stale(db, older_than_s=settings.budget_reservation_timeout_s)
    stalled = stale_analyses(
        db, older_than_s=settings.budget_reservation_timeout_s, limit=settings.outbox_sweep_limit
    )
    if stalled:
        dispatcher.analyze_local(stalled, dict.fromkeys(stalled, "stalled analysis re-queued"))
    return SweepSummary(
        examined=result.examined,
        republished=len(result.republished) - len(result.publish_failed),
        dead=len(result.dead),
        skipped_locked=result.skipped_locked,
        reservations_released=released,
        analyses_requeued=len(stalled),
    )
