"""The main job: ingest files, publish extraction, wait until everything is done, summarise.

Postgres is the source of truth: interactions are committed (``received``) before their task is
published, marked ``queued`` after, and completion is read from the database (every interaction in
a terminal status, every pattern of theirs embedded), not from task results. So the same run
through Redis and separate workers ends with the same counts as the in-process run.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import ColumnElement, func, or_, select

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, LLMCall, Pattern
from pipeline.db.status import TERMINAL_STATUSES, AnalysisStatus, InteractionStatus
from pipeline.dispatch import Dispatcher
from pipeline.errors import PipelineError
from pipeline.intake.outbox import pending_ids, publish_pending
from pipeline.intake.records import IngestReport, ingest_paths
from pipeline.ops.stats import Outcomes, interaction_outcomes
from pipeline.settings import Settings
from pipeline.types import ClaudeMode, Progress, TaskType

log = structlog.get_logger(__name__)


class RunTimeout(PipelineError):
    """Workers did not finish the run's interactions within ``run_timeout_s``."""


#: Requests per Message Batch that ``run --claude-batch`` submits (the API takes up to 100,000
#: or 256 MB per batch; smaller batches end sooner and fail smaller).
CLAUDE_BATCH_CHUNK = 1000


def pending_analyses(db: Database, interaction_ids: Sequence[int]) -> list[int]:
    """The given interactions whose strategic analysis is ``pending``, by id."""
    with db.session(ALL_PROJECTS) as session:
        return list(
            session.scalars(
                select(Interaction.id)
                .where(
                    Interaction.id.in_(list(interaction_ids)),
                    Interaction.analysis_status == AnalysisStatus.PENDING,
                )
                .order_by(Interaction.id)
            ).all()
        )


@dataclass(frozen=True)
class StageCounts:
    """How far a run's interactions have come, read from the database.

    Attributes:
        interactions: the run's interactions.
        open_interactions: those not in a terminal status (or, when analyses are counted, with
            a pending strategic analysis).
        patterns: patterns extracted from them so far.
        unembedded: those patterns without an embedding yet.
    """

    interactions: int
    open_interactions: int
    patterns: int
    unembedded: int

    def report(self, progress: Progress) -> None:
        """Report the ``extract`` stage (finished interactions of all) and the ``embed`` stage
        (embedded patterns of those extracted so far; total 0 while there are none)."""
        progress("extract", self.interactions - self.open_interactions, self.interactions)
        progress("embed", self.patterns - self.unembedded, self.patterns)


def stage_counts(
    db: Database, interaction_ids: Sequence[int], *, analyses: bool = True
) -> StageCounts:
    """Count the given interactions' open ones and their patterns (all, and unembedded);
    ``analyses``: an interaction with a pending strategic analysis is still open."""
    ids = list(interaction_ids)
    waiting: ColumnElement[bool] = Interaction.status.not_in([s.value for s in TERMINAL_STATUSES])
    if analyses:
        waiting = or_(waiting, Interaction.analysis_status == AnalysisStatus.PENDING)
    with db.session(ALL_PROJECTS) as session:
        open_interactions = session.scalar(
            select(func.count()).where(Interaction.id.in_(ids), waiting)
        )
        patterns, unembedded = session.execute(
            select(
                func.count(),
                func.count().filter(Pattern.embedding.is_(None)),
            ).where(Pattern.source_interaction_id.in_(ids))
        ).one()
    return StageCounts(len(ids), int(open_interactions or 0), int(patterns), int(unembedded))


def unfinished(
    db: Database, interaction_ids: Sequence[int], *, analyses: bool = True
) -> tuple[int, int]:
    """``(interactions not in a terminal status, or with a pending strategic analysis when
    ``analyses``; their patterns not yet embedded)``."""
    counts = stage_counts(db, interaction_ids, analyses=analyses)
    return counts.open_interactions, counts.unembedded


def wait_until_done(
    db: Database, interaction_ids: Sequence[int], *, timeout_s: float, poll_s: float,
    progress: Progress | None = None, analyses: bool = True,
) -> None:  # fmt: skip
    """Poll the database until every interaction is terminal, every pattern embedded and (with
    ``analyses``) no strategic analysis pending, reporting the ``extract`` and ``embed`` stages
    (:meth:`StageCounts.report`) after each poll.

    Raises:
        RunTimeout: not done within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        counts = stage_counts(db, interaction_ids, analyses=analyses)
        if progress:
            counts.report(progress)
        open_count, unembedded = counts.open_interactions, counts.unembedded
        if open_count == 0 and unembedded == 0:
            return
        if time.monotonic() > deadline:
            raise RunTimeout(
                f"{open_count} interactions unfinished and {unembedded} patterns unembedded "
                f"after {timeout_s:.0f} s: are `patterns worker --role extract` and "
                "`--role embed` running against the same broker and database?"
            )
        time.sleep(poll_s)


#: Least seconds between two database reads for progress while publishing (in distributed mode
#: a publish takes milliseconds; in process each one runs a whole batch).
PUBLISH_PROGRESS_S = 0.5


def stage_progress(
    db: Database, interaction_ids: Sequence[int], progress: Progress | None,
    min_interval_s: float = PUBLISH_PROGRESS_S,
) -> Progress | None:  # fmt: skip
    """The callback :func:`~pipeline.intake.outbox.publish_pending` reports to during a run:
    each report (at most one per ``min_interval_s``, and always the last) becomes the
    ``extract`` and ``embed`` stages' counts, read from the database. None without
    ``progress``."""
    if progress is None:
        return None
    last = -math.inf

    def report(stage: str, done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if done < total and now - last < min_interval_s:
            return
        last = now
        stage_counts(db, interaction_ids).report(progress)

    return report


@dataclass(frozen=True)
class RunSummary:
    """What ``patterns run`` did: the interactions' :class:`~pipeline.ops.stats.Outcomes` and the
    run's own figures (seconds, throughput). :meth:`as_dict` is the ``--json`` object."""

    outcomes: Outcomes
    new_interactions: int
    already_stored: int
    published: int
    skipped_deliveries: int
    malformed: int
    mode: str
    seconds: float
    model_load_seconds: float
    processing_seconds: float
    run_tokens_out: int

    @property
    def interactions_per_s(self) -> float:
        """Interactions over processing seconds (model loading excluded)."""
        if not self.processing_seconds:
            return 0.0
        return round(self.outcomes.interactions / self.processing_seconds, 3)

    @property
    def output_tokens_per_s(self) -> float:
        """Output tokens generated during the run over processing seconds."""
        if not self.processing_seconds:
            return 0.0
        return round(self.run_tokens_out / self.processing_seconds, 1)

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` object: every :class:`Outcomes` field but ``by_status``, the status
        counts ``extracted``, ``failed`` (failed and dead) and ``skipped``, and the run's own
        fields."""
        out: dict[str, Any] = {
            f.name: getattr(self.outcomes, f.name) for f in dataclasses.fields(self.outcomes)
        }
        out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in out.items()}
        out.pop("by_status")
        o = self.outcomes
        out |= {
            "extracted": o.count(InteractionStatus.EXTRACTED),
            "failed": o.count(InteractionStatus.FAILED, InteractionStatus.DEAD),
            "skipped": o.count(InteractionStatus.SKIPPED),
            "new_interactions": self.new_interactions,
            "already_stored": self.already_stored,
            "published": self.published,
            "skipped_deliveries": self.skipped_deliveries,
            "malformed": self.malformed,
            "mode": self.mode,
            "seconds": round(self.seconds, 2),
            "model_load_seconds": round(self.model_load_seconds, 2),
            "processing_seconds": round(self.processing_seconds, 2),
            "interactions_per_s": self.interactions_per_s,
            "run_tokens_out": self.run_tokens_out,
            "output_tokens_per_s": self.output_tokens_per_s,
        }
        return out


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
) -> RunSummary:
    """Process ``paths`` to completion and return the summary.

    ``claude_batch``: work routed to Claude goes through the Message Batches API (half price,
    slower) instead of one Messages call per request.

    ``warm_up`` (eager mode) loads the models before the clock for processing starts, so
    ``processing_seconds`` and ``output_tokens_per_s`` measure the pipeline, not start-up.

    Raises:
        RunTimeout: workers did not finish in time (distributed mode).
        FileNotFoundError: an input path does not exist.
    """
    started = time.perf_counter()
    with db.session(ALL_PROJECTS) as session:
        db_started = session.scalar(select(func.now()))
    report = ingest_paths(db, paths, limit=limit, progress=progress)
    if progress:  # the total is known now: the ingest bar is complete
        progress("ingest", len(report.interaction_ids), len(report.interaction_ids))
    load_seconds = 0.0
    if warm_up is not None and pending_ids(db, report.interaction_ids):
        t = time.perf_counter()
        warm_up()
        load_seconds = time.perf_counter() - t
    processing_started = time.perf_counter()
    mode = ClaudeMode.BATCH if claude_batch else ClaudeMode.SYNC
    if progress:
        stage_counts(db, report.interaction_ids).report(progress)
    published = publish_pending(
        db, dispatcher, report.interaction_ids, settings.extract_batch_size,
        stage_progress(db, report.interaction_ids, progress), claude_mode=mode,
    )  # fmt: skip
    poll_s = settings.run_poll_s if not dispatcher.eager else 0.05
    if claude_batch:
        _send_analyses_in_batches(db, dispatcher, report, settings, poll_s, progress)
    # Even in process, a Claude share deferred to the local queue or an analysis queued after
    # extraction may still be waiting when the publishing call returns: wait for the database.
    wait_until_done(
        db, report.interaction_ids, timeout_s=settings.run_timeout_s, poll_s=poll_s,
        progress=progress,
    )  # fmt: skip
    processing = time.perf_counter() - processing_started
    with db.session(ALL_PROJECTS) as session:
        outcomes = interaction_outcomes(session, report.interaction_ids)
        run_tokens_out = session.scalar(
            select(func.coalesce(func.sum(LLMCall.tokens_out), 0)).where(
                LLMCall.interaction_id.in_(report.interaction_ids),
                LLMCall.created_at >= db_started,
            )
        )
    return RunSummary(
        outcomes=outcomes,
        new_interactions=report.created,
        already_stored=report.existing,
        published=published,
        skipped_deliveries=report.skipped_deliveries,
        malformed=len(report.malformed),
        mode="in-process" if dispatcher.eager else "distributed",
        seconds=time.perf_counter() - started,
        model_load_seconds=load_seconds,
        processing_seconds=processing,
        run_tokens_out=int(run_tokens_out or 0),
    )


def _send_analyses_in_batches(
    db: Database, dispatcher: Dispatcher, report: IngestReport, settings: Settings,
    poll_s: float, progress: Progress | None,
) -> None:  # fmt: skip
    """``run --claude-batch``: once extraction is over, send the run's pending strategic
    analyses to Claude together, in Message Batches of up to :data:`CLAUDE_BATCH_CHUNK`."""
    wait_until_done(
        db, report.interaction_ids, timeout_s=settings.run_timeout_s, poll_s=poll_s,
        progress=progress, analyses=False,
    )  # fmt: skip
    waiting = pending_analyses(db, report.interaction_ids)
    for start in range(0, len(waiting), CLAUDE_BATCH_CHUNK):
        dispatcher.claude(
            waiting[start : start + CLAUDE_BATCH_CHUNK],
            TaskType.STRATEGIC_ANALYSIS,
            claude_mode=ClaudeMode.BATCH,
        )
