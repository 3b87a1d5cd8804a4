"""The operator page's figures, from the functions behind ``patterns report``, ``GET /v1/costs``,
``GET /metrics`` and ``patterns errors report``: queue lengths, interactions by status, today's
spend against the budget, extraction quality (overall, and per task type from ``llm_calls``),
the error-fix acceptance rate, and the days the chart draws. Operators see every project: these
reads say so with :data:`~pipeline.db.engine.ALL_PROJECTS`, as the reports do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import func, select

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import LLMCall
from pipeline.db.status import CallOutcome
from pipeline.errorfix.store import Acceptance, acceptance
from pipeline.ops.costs import CostReport, cost_report
from pipeline.ops.metrics import read_queue_lengths
from pipeline.ops.report import Report, build_report
from pipeline.queues import QUEUES
from pipeline.settings import Settings

log = structlog.get_logger(__name__)

#: UTC days the operator page covers (today included).
WINDOW_DAYS = 14
#: Fields of :class:`~pipeline.ops.report.Quality` and :class:`~pipeline.ops.report.Report` the
#: page lays out itself; any other field (figures added to the report later, such as label-free
#: signals or cross-check agreement per task type) is listed as it comes, in a slot of its own.
KNOWN_QUALITY = frozenset(
    {"extracted", "failed", "failure_rate", "top_failure_reasons", "patterns_per_extracted",
     "validations", "relationships", "recommendations"}
)  # fmt: skip
KNOWN_REPORT = frozenset(
    {"generated_at", "days", "start", "end", "daily", "total_cost_usd", "quality",
     "response_cache", "queue"}
)  # fmt: skip


@dataclass(frozen=True)
class TaskQuality:
    """Model requests of one task type over the window: how many gave valid output."""

    task_type: str
    calls: int
    ok: int
    invalid: int
    truncated: int
    error: int

    @property
    def valid_rate(self) -> float | None:
        """Share of requests whose output parsed and validated (``ok``)."""
        return self.ok / self.calls if self.calls else None


@dataclass(frozen=True)
class OpsOverview:
    """Everything the operator page shows. ``queues`` is ``None`` with ``queue_note`` saying
    why (no broker configured, or it did not answer)."""

    queues: dict[str, int] | None
    queue_note: str | None
    report: Report
    costs: CostReport
    errorfix: Acceptance
    per_task: list[TaskQuality]
    quality_extra: dict[str, Any]

    @property
    def spend_share(self) -> float:
        """Today's Claude spend (plus open reservations) as a share of the cap, 0 to 1."""
        cap = float(self.costs.cap_usd)
        used = float(self.costs.spent_usd + self.costs.reserved_usd)
        return min(1.0, used / cap) if cap > 0 else 0.0


def queue_lengths(settings: Settings) -> tuple[dict[str, int] | None, str | None]:
    """Messages waiting per queue, or ``None`` and the reason."""
    if not settings.redis_url:
        return None, "no broker configured (REDIS_URL unset): work runs in process"
    import redis

    try:
        return read_queue_lengths(settings.redis_url, QUEUES), None
    except redis.RedisError as exc:
        log.warning("ui_queues_unreadable", error=str(exc))
        return None, f"the broker did not answer ({type(exc).__name__})"


def task_quality(db: Database, since: dt.datetime) -> list[TaskQuality]:
    """Per task type, model requests since ``since`` by outcome (deferred requests and cache
    hits reached no model and are left out)."""
    with db.session(ALL_PROJECTS) as session:
        rows = session.execute(
            select(LLMCall.task_type, LLMCall.outcome, func.count())
            .where(
                LLMCall.created_at >= since,
                LLMCall.outcome != CallOutcome.DEFERRED,
                LLMCall.cache_hit.is_(False),
            )
            .group_by(LLMCall.task_type, LLMCall.outcome)
        ).all()
    counts: dict[str, dict[str, int]] = {}
    for task, outcome, n in rows:
        counts.setdefault(str(task), {})[str(outcome)] = int(n)
    return [
        TaskQuality(
            task_type=task,
            calls=sum(by.values()),
            ok=by.get(CallOutcome.OK.value, 0),
            invalid=by.get(CallOutcome.INVALID.value, 0),
            truncated=by.get(CallOutcome.TRUNCATED.value, 0),
            error=by.get(CallOutcome.ERROR.value, 0),
        )
        for task, by in sorted(counts.items())
    ]


def extra_quality(report: Report) -> dict[str, Any]:
    """Quality figures of the report beyond those the page lays out (JSON-ready values)."""
    quality = report.quality.model_dump(mode="json")
    extra = {k: v for k, v in quality.items() if k not in KNOWN_QUALITY}
    whole = report.model_dump(mode="json")
    extra.update({k: v for k, v in whole.items() if k not in KNOWN_REPORT})
    return extra


def ops_overview(db: Database, settings: Settings) -> OpsOverview:
    """The operator page's figures, read now."""
    with db.session(ALL_PROJECTS) as session:
        report = build_report(session, settings=settings, days=WINDOW_DAYS)
        costs = cost_report(session, settings=settings)
    since = dt.datetime.combine(report.start, dt.time(0), tzinfo=dt.UTC)
    queues, note = queue_lengths(settings)
    return OpsOverview(
        queues=queues,
        queue_note=note,
        report=report,
        costs=costs,
        errorfix=acceptance(db),
        per_task=task_quality(db, since),
        quality_extra=extra_quality(report),
    )
