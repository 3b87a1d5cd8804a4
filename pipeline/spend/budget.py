"""The daily Claude budget: its caps, its state and admission (a pure decision).

Before a Claude call a worker reserves its worst-case cost
(:func:`pipeline.spend.pricing.worst_case_usd`) on the day's ``budget_days`` row; after it, it
settles the reservation with the real cost, or releases it when no call was made
(:mod:`pipeline.spend.reservations`). ``spent_usd + reserved_usd`` never passes the cap in force for
the priority of the reservation, however many workers reserve at once:

- ``normal`` calls: up to ``settings.daily_budget_usd``;
- ``emergency`` calls: up to ``settings.emergency_budget_usd``, which bounds the spend of all
  priorities together (never below the daily cap: an emergency call is not refused where a normal
  one would pass).

Days are UTC dates. Money is :class:`~decimal.Decimal`, kept to 0.000001 USD (``numeric(12, 6)``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from pipeline.db.models import BudgetDay
from pipeline.errors import InvalidValueError
from pipeline.settings import Settings
from pipeline.types import Priority, Provider

_ZERO = Decimal(0)


def budget_day(now: dt.datetime | None = None) -> dt.date:
    """The budget day of ``now`` (default: the current time): its UTC date. A naive datetime is
    taken as UTC."""
    if now is None:
        now = dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        return now.date()
    return now.astimezone(dt.UTC).date()


def limit_for(priority: Priority, cap_usd: Decimal, emergency_cap_usd: Decimal) -> Decimal:
    """The ceiling of ``spent + reserved`` for a call of ``priority``."""
    if priority is Priority.EMERGENCY:
        return max(cap_usd, emergency_cap_usd)
    return cap_usd


@dataclass(frozen=True)
class BudgetState:
    """A day's budget of one provider, in USD: caps from settings, spend from ``budget_days``."""

    day: dt.date
    cap_usd: Decimal
    emergency_cap_usd: Decimal
    spent_usd: Decimal
    reserved_usd: Decimal

    @property
    def remaining_usd(self) -> Decimal:
        """What normal calls may still reserve: ``max(0, cap - spent - reserved)``."""
        return max(_ZERO, self.cap_usd - self.spent_usd - self.reserved_usd)

    @property
    def emergency_remaining_usd(self) -> Decimal:
        """What emergency calls may still reserve, against the emergency cap."""
        limit = limit_for(Priority.EMERGENCY, self.cap_usd, self.emergency_cap_usd)
        return max(_ZERO, limit - self.spent_usd - self.reserved_usd)


@dataclass(frozen=True)
class Admission:
    """Whether a call of a given cost fits: ``pool`` is ``daily`` or ``emergency`` (the cap
    applied), ``limit_usd`` that cap, ``reason`` a sentence with the figures."""

    admitted: bool
    limit_usd: Decimal
    pool: str
    reason: str


def admission(cost_usd: Decimal, state: BudgetState, priority: Priority) -> Admission:
    """Decide (purely) whether a call costing ``cost_usd`` fits the day's budget.

    Normal calls need ``spent + reserved + cost <= cap``; emergency calls
    ``spent + reserved + cost <= emergency cap`` (spend of every priority counts against it).

    Raises:
        InvalidValueError: a negative cost.
    """
    if cost_usd < 0:
        raise InvalidValueError(f"cost must be >= 0, got {cost_usd}")
    pool = "emergency" if priority is Priority.EMERGENCY else "daily"
    limit = limit_for(priority, state.cap_usd, state.emergency_cap_usd)
    committed = state.spent_usd + state.reserved_usd
    total = committed + cost_usd
    figures = (
        f"spent {state.spent_usd} + reserved {state.reserved_usd} + this call {cost_usd} "
        f"= {total} USD"
    )
    if total <= limit:
        return Admission(True, limit, pool, f"{figures} fits the {pool} cap of {limit} USD")
    return Admission(False, limit, pool, f"{figures} would pass the {pool} cap of {limit} USD")


def budget_state(
    session: Session,
    *,
    settings: Settings,
    day: dt.date | None = None,
    provider: str = Provider.CLAUDE,
) -> BudgetState:
    """The budget of ``provider`` on ``day`` (default today, UTC): zeros when no row exists yet;
    the caps are the settings' (the row's ``cap_usd`` is the cap at its last reservation)."""
    day = day or budget_day()
    row = session.execute(
        select(BudgetDay.spent_usd, BudgetDay.reserved_usd).where(
            BudgetDay.day == day, BudgetDay.provider == provider
        )
    ).first()
    spent, reserved = (row[0], row[1]) if row is not None else (_ZERO, _ZERO)
    return BudgetState(
        day=day,
        cap_usd=settings.daily_budget_usd,
        emergency_cap_usd=settings.emergency_budget_usd,
        spent_usd=spent,
        reserved_usd=reserved,
    )
