"""The main job: ingest files, publish extraction, wait until everything is done, summarise.

Postgres is the source of truth: interactions are committed (``received``) before their task is
published, marked ``queued`` after, and completion is read from the database (every interaction in
a terminal status, every pattern of theirs embedded), not from task results. So the same run
through Redis and separate workers ends with the same counts as the in-process run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import ColumnElement, case, func, or_, select, update

from pipeline.db.engine import Database
from pipeline.db.models import TERMINAL_STATUSES, Interaction, InteractionStatus, LLMCall, Pattern
from pipeline.dispatch import Dispatcher
from pipeline.errors import PipelineError
from pipeline.ingest import MalformedRecord, Normalized, read_records, store
from pipeline.settings import Settings, TaskType
from pipeline.stats import interaction_outcomes

log = structlog.get_logger(__name__)

STORE_CHUNK = 500

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: stage is ``ingest``, ``extract`` or ``wait``."""


class RunTimeout(PipelineError):
    """Workers did not finish the run's interactions within ``run_timeout_s``."""


@dataclass
class IngestReport:
    """What reading and storing the input gave."""

    interaction_ids: list[int] = field(default_factory=list)
    created: int = 0
    existing: int = 0
    skipped_deliveries: int = 0
    malformed: list[MalformedRecord] = field(default_factory=list)


def ingest_paths(
    db: Database, paths: Iterable[Path], *, limit: int | None = None,
    progress: Progress | None = None,
) -> IngestReport:  # fmt: skip
    """Read, normalise and store the records of ``paths`` in chunks (see :func:`store`)."""
    report = IngestReport()
    seen: set[int] = set()
    chunk: list[Normalized] = []

    def flush() -> None:
        if not chunk:
            return
        with db.session() as session:
            result = store(session, chunk)
        for iid in result.interaction_ids:
            if iid not in seen:
                seen.add(iid)
                report.interaction_ids.append(iid)
        report.created += result.created
        report.existing += result.existing
        report.skipped_deliveries += result.skipped
        chunk.clear()
        if progress:
            progress("ingest", len(report.interaction_ids), 0)

    for record in read_records(paths, limit):
        if isinstance(record, MalformedRecord):
            log.warning("malformed_record", where=record.where, reason=record.reason)
            report.malformed.append(record)
            continue
        chunk.append(record)
        if len(chunk) >= STORE_CHUNK:
            flush()
    flush()
    return report


#: Requests per Message Batch that ``run --claude-batch`` submits (the API takes up to 100,000
#: or 256 MB per batch; smaller batches end sooner and fail smaller).
CLAUDE_BATCH_CHUNK = 1000


def pending_analyses(db: Database, interaction_ids: Sequence[int]) -> list[int]:
    """The given interactions whose strategic analysis is ``pending``, by id."""
    with db.session() as session:
        return list(
            session.scalars(
                select(Interaction.id)
                .where(
                    Interaction.id.in_(list(interaction_ids)),
                    Interaction.analysis_status == "pending",
                )
                .order_by(Interaction.id)
            ).all()
        )


#: Statuses of interactions that still wait for extraction.
PENDING = (InteractionStatus.RECEIVED, InteractionStatus.QUEUED)


def pending_ids(
    db: Database, interaction_ids: Sequence[int],
    statuses: Sequence[InteractionStatus] = PENDING,
) -> list[int]:  # fmt: skip
    """The given interactions still waiting for extraction (by default ``received`` or
    ``queued``; ``statuses`` narrows it), by id."""
    with db.session() as session:
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
    progress: Progress | None = None, statuses: Sequence[InteractionStatus] = PENDING,
    check: bool = True, claude_mode: str = "sync",
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
    waiting = Interaction.status.in_(
        [InteractionStatus.RECEIVED.value, InteractionStatus.QUEUED.value]
    )
    done = 0
    for start in range(0, len(pending), batch_size):
        batch = list(pending[start : start + batch_size])
        dispatcher.extract(batch, claude_mode=claude_mode)
        with db.session() as session:
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


def unfinished(
    db: Database, interaction_ids: Sequence[int], *, analyses: bool = True
) -> tuple[int, int]:
    """``(interactions not in a terminal status, or with a pending strategic analysis when
    ``analyses``; their patterns not yet embedded)``."""
    ids = list(interaction_ids)
    waiting: ColumnElement[bool] = Interaction.status.not_in([s.value for s in TERMINAL_STATUSES])
    if analyses:
        waiting = or_(waiting, Interaction.analysis_status == "pending")
    with db.session() as session:
        open_interactions = session.scalar(
            select(func.count()).where(Interaction.id.in_(ids), waiting)
        )
        unembedded = session.scalar(
            select(func.count()).where(
                Pattern.source_interaction_id.in_(ids), Pattern.embedding.is_(None)
            )
        )
    return int(open_interactions or 0), int(unembedded or 0)


def wait_until_done(
    db: Database, interaction_ids: Sequence[int], *, timeout_s: float, poll_s: float,
    progress: Progress | None = None, analyses: bool = True,
) -> None:  # fmt: skip
    """Poll the database until every interaction is terminal, every pattern embedded and (with
    ``analyses``) no strategic analysis pending.

    Raises:
        RunTimeout: not done within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    total = len(interaction_ids)
    while True:
        open_count, unembedded = unfinished(db, interaction_ids, analyses=analyses)
        if progress:
            progress("wait", total - open_count, total)
        if open_count == 0 and unembedded == 0:
            return
        if time.monotonic() > deadline:
            raise RunTimeout(
                f"{open_count} interactions unfinished and {unembedded} patterns unembedded "
                f"after {timeout_s:.0f} s: are `patterns worker --role extract` and "
                "`--role embed` running against the same broker and database?"
            )
        time.sleep(poll_s)


def run(
    paths: Sequence[Path],
    *,
    db: Database,
    dispatcher: Dispatcher,
    settings: Settings,
    limit: int | None = None,
    progress: Progress | None = None,
    warm_up: Callable[[], None] | None = None,
    claude_batch: bool = False,
) -> dict[str, Any]:
    """Process ``paths`` to completion and return the summary (the ``--json`` object).

    ``claude_batch``: work routed to Claude goes through the Message Batches API (half price,
    slower) instead of one Messages call per request.

    ``warm_up`` (eager mode) loads the models before the clock for processing starts, so
    ``processing_seconds`` and ``output_tokens_per_s`` measure the pipeline, not start-up.

    Raises:
        RunTimeout: workers did not finish in time (distributed mode).
        FileNotFoundError: an input path does not exist.
    """
    started = time.perf_counter()
    with db.session() as session:
        db_started = session.scalar(select(func.now()))
    report = ingest_paths(db, paths, limit=limit, progress=progress)
    load_seconds = 0.0
    if warm_up is not None and pending_ids(db, report.interaction_ids):
        t = time.perf_counter()
        warm_up()
        load_seconds = time.perf_counter() - t
    processing_started = time.perf_counter()
    published = publish_pending(
        db, dispatcher, report.interaction_ids, settings.extract_batch_size, progress,
        claude_mode="batch" if claude_batch else "sync",
    )  # fmt: skip
    poll_s = settings.run_poll_s if not dispatcher.eager else 0.05
    if claude_batch:
        # Extraction first; the strategic analyses routed to Claude wait, pending, to go out
        # together in Message Batches of up to CLAUDE_BATCH_CHUNK requests.
        wait_until_done(
            db, report.interaction_ids, timeout_s=settings.run_timeout_s, poll_s=poll_s,
            progress=progress, analyses=False,
        )  # fmt: skip
        waiting = pending_analyses(db, report.interaction_ids)
        for start in range(0, len(waiting), CLAUDE_BATCH_CHUNK):
            dispatcher.claude(
                waiting[start : start + CLAUDE_BATCH_CHUNK],
                TaskType.STRATEGIC_ANALYSIS.value,
                claude_mode="batch",
            )
    # Even in process, a Claude share deferred to the local queue or an analysis queued after
    # extraction may still be waiting when the publishing call returns: wait for the database.
    wait_until_done(
        db, report.interaction_ids, timeout_s=settings.run_timeout_s, poll_s=poll_s,
        progress=progress,
    )  # fmt: skip
    processing = time.perf_counter() - processing_started
    seconds = time.perf_counter() - started
    with db.session() as session:
        outcome = interaction_outcomes(session, report.interaction_ids)
        run_tokens_out = session.scalar(
            select(func.coalesce(func.sum(LLMCall.tokens_out), 0)).where(
                LLMCall.interaction_id.in_(report.interaction_ids),
                LLMCall.created_at >= db_started,
            )
        )
    by_status = outcome.pop("by_status")
    interactions = outcome["interactions"]
    return {
        **outcome,
        "extracted": by_status.get(InteractionStatus.EXTRACTED.value, 0),
        "failed": by_status.get(InteractionStatus.FAILED.value, 0)
        + by_status.get(InteractionStatus.DEAD.value, 0),
        "skipped": by_status.get(InteractionStatus.SKIPPED.value, 0),
        "new_interactions": report.created,
        "already_stored": report.existing,
        "published": published,
        "skipped_deliveries": report.skipped_deliveries,
        "malformed": len(report.malformed),
        "mode": "in-process" if dispatcher.eager else "distributed",
        "seconds": round(seconds, 2),
        "model_load_seconds": round(load_seconds, 2),
        "processing_seconds": round(processing, 2),
        "interactions_per_s": round(interactions / processing, 3) if processing else 0.0,
        "run_tokens_out": int(run_tokens_out or 0),
        "output_tokens_per_s": round(int(run_tokens_out or 0) / processing, 1)
        if processing
        else 0.0,
    }
