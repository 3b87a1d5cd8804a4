"""The day's model costs: budget state, spend per model from ``llm_calls``, and what the local
model's calls would have cost on Claude (``patterns costs``, ``GET /v1/costs``)."""

from __future__ import annotations

import datetime as dt
from decimal import ROUND_HALF_EVEN, Decimal

import structlog
from pydantic import BaseModel, Field
from sqlalchemy import func, literal, select
from sqlalchemy.orm import Session

from pipeline.db.models import BudgetReservation, LLMCall
from pipeline.db.status import CallOutcome, ReservationStatus
from pipeline.errors import ConfigurationError
from pipeline.settings import Settings
from pipeline.spend.budget import budget_day, budget_state
from pipeline.spend.pricing import USD_QUANTUM, price_for
from pipeline.types import Provider

log = structlog.get_logger(__name__)

#: ``llm_calls.provider`` of calls served by the local (vLLM) model.
_MILLION = Decimal(1_000_000)


class ModelCost(BaseModel):
    """One provider and model's calls on the day: tokens, dollars and cache hits."""

    provider: str
    model: str
    calls: int
    tokens_in: int
    tokens_out: int
    cache_read_tokens: int
    cache_write_tokens: int
    cost_usd: Decimal
    cache_hit_rate: float | None = Field(
        description="cache_read / (tokens_in + cache_read + cache_write); null without tokens."
    )


class CostTotals(BaseModel):
    """Every call of the day, all providers."""

    calls: int
    cost_usd: Decimal


class CostReport(BaseModel):
    """A UTC day's costs. Money in USD (decimal strings in JSON)."""

    day: dt.date
    cap_usd: Decimal
    emergency_cap_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal
    remaining_usd: Decimal
    emergency_remaining_usd: Decimal
    reservations_open: int = Field(description="Reservations still `reserved` for the day.")
    by_model: list[ModelCost]
    totals: CostTotals
    local_calls: int = Field(description="Calls served by the local model on the day.")
    local_calls_on_claude_model: str = Field(
        description="The Claude model the local calls are priced on (settings.claude_model)."
    )
    local_calls_on_claude_usd: Decimal | None = Field(
        description="What the day's local calls would have cost on local_calls_on_claude_model "
        "at the standard price (their tokens_in as input, tokens_out as output); null when that "
        "model has no price."
    )


def _day_bounds(day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    start = dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)
    return start, start + dt.timedelta(days=1)


def _local_on_claude(
    session: Session, model: str, start: dt.datetime, end: dt.datetime
) -> Decimal | None:
    """Standard-price cost on ``model`` of the local calls in ``[start, end)``.

    Summed in SQL, split by whether a call's prompt passes the model's long-prompt threshold
    (the tier is per request); rounded half-even to 0.000001 once, on the total.
    """
    try:
        price = price_for(model)
    except ConfigurationError as exc:
        log.warning("costs_unpriced_claude_model", model=model, error=str(exc))
        return None
    threshold = price.long_prompt_threshold
    long_flag = LLMCall.tokens_in > threshold if threshold is not None else literal(False)
    rows = session.execute(
        select(
            long_flag.label("long"),
            func.coalesce(func.sum(LLMCall.tokens_in), 0),
            func.coalesce(func.sum(LLMCall.tokens_out), 0),
        )
        .where(
            LLMCall.provider == Provider.LOCAL,
            LLMCall.created_at >= start,
            LLMCall.created_at < end,
        )
        .group_by(long_flag)
    ).all()
    total = Decimal(0)
    for long, tokens_in, tokens_out in rows:
        raw = int(tokens_in) * price.input_per_mtok + int(tokens_out) * price.output_per_mtok
        total += raw * (price.long_prompt_multiplier if long else Decimal(1))
    return (total / _MILLION).quantize(USD_QUANTUM, rounding=ROUND_HALF_EVEN)


def cost_report(session: Session, *, settings: Settings, day: dt.date | None = None) -> CostReport:
    """The costs of ``day`` (default today, UTC): the Claude budget (caps from ``settings``),
    open reservations, ``llm_calls`` created that UTC day per provider and model, and the local
    calls priced on ``settings.claude_model``."""
    day = day or budget_day()
    start, end = _day_bounds(day)
    state = budget_state(session, settings=settings, day=day, provider=Provider.CLAUDE)
    open_count = session.scalar(
        select(func.count())
        .select_from(BudgetReservation)
        .where(BudgetReservation.day == day, BudgetReservation.status == ReservationStatus.RESERVED)
    )
    rows = session.execute(
        select(
            LLMCall.provider,
            LLMCall.model,
            func.count(),
            func.coalesce(func.sum(LLMCall.tokens_in), 0),
            func.coalesce(func.sum(LLMCall.tokens_out), 0),
            func.coalesce(func.sum(LLMCall.cache_read_tokens), 0),
            func.coalesce(func.sum(LLMCall.cache_write_tokens), 0),
            func.coalesce(func.sum(LLMCall.cost_usd), 0),
        )
        .where(
            LLMCall.created_at >= start,
            LLMCall.created_at < end,
            LLMCall.outcome != CallOutcome.DEFERRED,  # never sent: not a call
            LLMCall.cache_hit.is_(False),  # answered from the response cache: not a call
        )
        .group_by(LLMCall.provider, LLMCall.model)
        .order_by(LLMCall.provider, LLMCall.model)
    ).all()
    by_model = []
    local_calls = 0
    for provider, model, calls, t_in, t_out, c_read, c_write, cost in rows:
        prompt = int(t_in) + int(c_read) + int(c_write)
        by_model.append(
            ModelCost(
                provider=provider,
                model=model,
                calls=int(calls),
                tokens_in=int(t_in),
                tokens_out=int(t_out),
                cache_read_tokens=int(c_read),
                cache_write_tokens=int(c_write),
                cost_usd=Decimal(cost).quantize(USD_QUANTUM),
                cache_hit_rate=int(c_read) / prompt if prompt else None,
            )
        )
        if provider == Provider.LOCAL:
            local_calls += int(calls)
    totals = CostTotals(
        calls=sum(m.calls for m in by_model),
        cost_usd=sum((m.cost_usd for m in by_model), Decimal(0)).quantize(USD_QUANTUM),
    )
    return CostReport(
        day=day,
        cap_usd=state.cap_usd,
        emergency_cap_usd=state.emergency_cap_usd,
        spent_usd=state.spent_usd,
        reserved_usd=state.reserved_usd,
        remaining_usd=state.remaining_usd,
        emergency_remaining_usd=state.emergency_remaining_usd,
        reservations_open=int(open_count or 0),
        by_model=by_model,
        totals=totals,
        local_calls=local_calls,
        local_calls_on_claude_model=settings.claude_model,
        local_calls_on_claude_usd=_local_on_claude(session, settings.claude_model, start, end),
    )
