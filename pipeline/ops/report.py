"""The operations report (``patterns report``): cost, quality (label-free signals included,
:mod:`pipeline.ops.quality`) and queue health over the last N UTC days, from the database alone,
and a PNG chart of patterns and Claude spend per day.

Days are UTC calendar days, the same as the budget's (:func:`pipeline.spend.budget.budget_day`); the
window is the last ``days`` of them, today included. An interaction counts as extracted or
failed on the day it was processed (``processed_at``), as created on the day it was stored.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import Date, String, cast, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import ColumnElement

from pipeline.db.models import (
    BudgetDay,
    Interaction,
    LLMCall,
    Pattern,
    PatternRelationship,
    PatternValidation,
    Recommendation,
)
from pipeline.db.status import AnalysisStatus, CallOutcome, InteractionStatus
from pipeline.errors import InvalidValueError
from pipeline.ops.quality import QualitySignals, read_cross_checks, read_signals
from pipeline.ops.stats import cache_hit_rate
from pipeline.quality.agreement import Agreement
from pipeline.settings import Settings
from pipeline.spend.pricing import USD_QUANTUM
from pipeline.types import Provider

#: Failure reasons listed in the report, most frequent first.
TOP_REASONS = 5
#: Characters of a failure reason kept in the report (reasons can quote model output).
REASON_CHARS = 200


class DayStats(BaseModel):
    """One UTC day. Money in USD (decimal strings in JSON)."""

    day: dt.date
    interactions_created: int
    extracted: int
    failed: int
    patterns_created: int
    llm_calls: dict[str, int] = Field(
        description="LLM calls that reached a model, by provider (llm_calls.provider); "
        "deferred requests and response cache hits are not calls."
    )
    cache_hits: int = Field(
        default=0, description="Requests answered from the exact response cache (no model)."
    )
    cost_usd: Decimal = Field(description="Sum of llm_calls.cost_usd, every provider.")
    claude_spent_usd: Decimal = Field(description="budget_days.spent_usd for Claude, else 0.")
    claude_cap_usd: Decimal = Field(
        description="The day's Claude cap: the budget_days row's cap (the cap at its last "
        "reservation), else settings.daily_budget_usd."
    )


class FailureReason(BaseModel):
    """A distinct ``interactions.last_error`` of failed interactions, cut to REASON_CHARS."""

    reason: str
    count: int


class Quality(BaseModel):
    """Extraction quality over the window."""

    extracted: int
    failed: int
    failure_rate: float | None = Field(description="failed / (extracted + failed); null if none.")
    top_failure_reasons: list[FailureReason]
    patterns_per_extracted: float | None = Field(
        description="Patterns whose source interaction was extracted in the window, per such "
        "interaction; null if none."
    )
    validations: int
    relationships: int
    recommendations: int


class QueueHealth(BaseModel):
    """The outbox now (not windowed)."""

    by_status: dict[str, int]
    oldest_queued_age_s: float | None = Field(
        description="Seconds since the oldest `queued` interaction was queued (created, when it "
        "has no queued_at); null when none is queued."
    )
    dead: int
    pending_analyses: int = Field(description="Interactions with analysis_status 'pending'.")


class ResponseCacheStats(BaseModel):
    """The exact response cache over the window (``llm_calls`` rows by ``cache_hit``)."""

    hits: int
    model_calls: int = Field(description="Requests that reached a model (deferred excluded).")
    hit_rate: float | None = Field(description="hits / (hits + model_calls); null if neither.")


class Report(BaseModel):
    """``patterns report``: the window's days (oldest first), quality, the response cache and
    queue health."""

    generated_at: dt.datetime
    days: int
    start: dt.date
    end: dt.date
    daily: list[DayStats]
    total_cost_usd: Decimal
    quality: Quality
    signals: QualitySignals = Field(
        description="Label-free quality of the window's extractions (pipeline.ops.quality)."
    )
    cross_checks: list[Agreement] = Field(
        description="Claude cross-check agreement per task type over quality_window_days."
    )
    response_cache: ResponseCacheStats
    queue: QueueHealth


def _utc_day(column: Any) -> ColumnElement[dt.date]:
    """SQL: the UTC calendar day of a ``timestamptz`` column."""
    return cast(func.timezone("UTC", column), Date)


def _per_day(session: Session, column: Any, start: dt.datetime, *where: Any) -> dict[dt.date, int]:
    day = _utc_day(column)
    rows = session.execute(
        select(day, func.count()).where(column >= start, *where).group_by(day)
    ).all()
    return {d: int(n) for d, n in rows}


def _count(session: Session, model: Any, *where: Any) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)


def _count_created(session: Session, model: Any, start: dt.datetime, stop: dt.datetime) -> int:
    return _count(session, model, model.created_at >= start, model.created_at < stop)


@dataclass(frozen=True)
class _Window:
    """The report's days: ``first``..``end`` (UTC dates) and ``[start, stop)`` as instants."""

    first: dt.date
    end: dt.date
    start: dt.datetime
    stop: dt.datetime

    @property
    def days(self) -> list[dt.date]:
        return [self.first + dt.timedelta(days=i) for i in range((self.end - self.first).days + 1)]


def build_report(
    session: Session, *, settings: Settings, days: int = 14, now: dt.datetime | None = None
) -> Report:
    """Cost, quality and queue health for the ``days`` UTC days ending today (of ``now``,
    default the current time), read in ``session``.

    Raises:
        InvalidValueError: ``days`` < 1.
    """
    if days < 1:
        raise InvalidValueError(f"days must be at least 1, not {days}")
    now = now or dt.datetime.now(dt.UTC)
    end = now.astimezone(dt.UTC).date()
    first = end - dt.timedelta(days=days - 1)
    start = dt.datetime.combine(first, dt.time(0), tzinfo=dt.UTC)
    window = _Window(first, end, start, start + dt.timedelta(days=days))
    processed = Interaction.processed_at
    extracted = _per_day(
        session, processed, start, processed < window.stop,
        Interaction.status == InteractionStatus.EXTRACTED.value,
    )  # fmt: skip
    failed = _per_day(
        session, processed, start, processed < window.stop,
        Interaction.status == InteractionStatus.FAILED.value,
    )  # fmt: skip
    daily = _daily(session, settings, window, extracted, failed)
    return Report(
        generated_at=now,
        days=days,
        start=first,
        end=end,
        daily=daily,
        total_cost_usd=sum((d.cost_usd for d in daily), Decimal(0)).quantize(USD_QUANTUM),
        quality=_quality(session, window, sum(extracted.values()), sum(failed.values())),
        signals=read_signals(session, start, window.stop),
        cross_checks=read_cross_checks(session, settings),
        response_cache=_response_cache(daily),
        queue=_queue_health(session, now),
    )


def _daily(
    session: Session,
    settings: Settings,
    window: _Window,
    extracted: dict[dt.date, int],
    failed: dict[dt.date, int],
) -> list[DayStats]:
    start, stop = window.start, window.stop
    created = _per_day(session, Interaction.created_at, start, Interaction.created_at < stop)
    patterns = _per_day(session, Pattern.created_at, start, Pattern.created_at < stop)
    call_day = _utc_day(LLMCall.created_at)
    calls: dict[dt.date, dict[str, int]] = {}
    hits: dict[dt.date, int] = {}
    cost: dict[dt.date, Decimal] = {}
    usd = func.coalesce(func.sum(LLMCall.cost_usd), 0)
    for d, provider, cache_hit, n, spent in session.execute(
        select(call_day, LLMCall.provider, LLMCall.cache_hit, func.count(), usd)
        .where(
            LLMCall.created_at >= start,
            LLMCall.created_at < stop,
            LLMCall.outcome != CallOutcome.DEFERRED,  # never sent: not a call
        )
        .group_by(call_day, LLMCall.provider, LLMCall.cache_hit)
    ).all():
        if cache_hit:  # answered from the response cache: not a call, no cost
            hits[d] = hits.get(d, 0) + int(n)
            continue
        calls.setdefault(d, {})[provider] = int(n)
        cost[d] = cost.get(d, Decimal(0)) + Decimal(spent)
    budget = {
        d: (spent, cap)
        for d, spent, cap in session.execute(
            select(BudgetDay.day, BudgetDay.spent_usd, BudgetDay.cap_usd).where(
                BudgetDay.provider == Provider.CLAUDE,
                BudgetDay.day >= window.first,
                BudgetDay.day <= window.end,
            )
        ).all()
    }
    return [
        DayStats(
            day=d,
            interactions_created=created.get(d, 0),
            extracted=extracted.get(d, 0),
            failed=failed.get(d, 0),
            patterns_created=patterns.get(d, 0),
            llm_calls=dict(sorted(calls.get(d, {}).items())),
            cache_hits=hits.get(d, 0),
            cost_usd=cost.get(d, Decimal(0)).quantize(USD_QUANTUM),
            claude_spent_usd=Decimal(budget[d][0] if d in budget else 0).quantize(USD_QUANTUM),
            claude_cap_usd=Decimal(budget[d][1] if d in budget else settings.daily_budget_usd),
        )
        for d in window.days
    ]


def _quality(session: Session, window: _Window, n_extracted: int, n_failed: int) -> Quality:
    processed = Interaction.processed_at
    in_window = (processed >= window.start, processed < window.stop)
    reason = func.left(func.coalesce(Interaction.last_error, "unknown"), REASON_CHARS, type_=String)
    reasons = session.execute(
        select(reason, func.count())
        .where(Interaction.status == InteractionStatus.FAILED.value, *in_window)
        .group_by(reason)
        .order_by(func.count().desc(), reason)
        .limit(TOP_REASONS)
    ).all()
    from_extracted = _count(
        session,
        Pattern,
        Pattern.source_interaction_id.in_(
            select(Interaction.id).where(
                Interaction.status == InteractionStatus.EXTRACTED.value, *in_window
            )
        ),
    )
    start, stop = window.start, window.stop
    return Quality(
        extracted=n_extracted,
        failed=n_failed,
        failure_rate=n_failed / (n_extracted + n_failed) if n_extracted + n_failed else None,
        top_failure_reasons=[FailureReason(reason=r, count=int(n)) for r, n in reasons],
        patterns_per_extracted=from_extracted / n_extracted if n_extracted else None,
        validations=_count_created(session, PatternValidation, start, stop),
        relationships=_count_created(session, PatternRelationship, start, stop),
        recommendations=_count_created(session, Recommendation, start, stop),
    )


def _response_cache(daily: list[DayStats]) -> ResponseCacheStats:
    hits = sum(d.cache_hits for d in daily)
    calls = sum(n for d in daily for n in d.llm_calls.values())
    return ResponseCacheStats(hits=hits, model_calls=calls, hit_rate=cache_hit_rate(hits, calls))


def _queue_health(session: Session, now: dt.datetime) -> QueueHealth:
    by_status = {
        s: int(n)
        for s, n in session.execute(
            select(Interaction.status, func.count())
            .group_by(Interaction.status)
            .order_by(Interaction.status)
        ).all()
    }
    oldest = session.scalar(
        select(func.min(func.coalesce(Interaction.queued_at, Interaction.created_at))).where(
            Interaction.status == InteractionStatus.QUEUED.value
        )
    )
    return QueueHealth(
        by_status=by_status,
        oldest_queued_age_s=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
        dead=by_status.get(InteractionStatus.DEAD.value, 0),
        pending_analyses=_count(
            session, Interaction, Interaction.analysis_status == AnalysisStatus.PENDING
        ),
    )


def write_chart(report: Report, path: Path) -> None:
    """Write a PNG of ``report``: patterns created per day (bars) above Claude spend per day
    (line) against its daily cap (dashed line). matplotlib is imported here, Agg canvas, no
    pyplot (no global state, no display)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    days = [d.day for d in report.daily]
    fig = Figure(figsize=(10, 6), layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.bar(days, [d.patterns_created for d in report.daily], color="tab:blue")
    top.set_ylabel("patterns created")
    top.set_title(f"patterns report {report.start} to {report.end} (UTC days)")
    bottom.plot(days, [float(d.claude_spent_usd) for d in report.daily], marker="o", label="spent")
    bottom.plot(
        days, [float(d.claude_cap_usd) for d in report.daily], linestyle="--", color="tab:red",
        label="daily cap",
    )  # fmt: skip
    bottom.set_ylabel("Claude USD")
    bottom.set_ylim(bottom=0)
    bottom.legend(loc="upper left")
    fig.autofmt_xdate()
    fig.savefig(path, format="png", dpi=100)
