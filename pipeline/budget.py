"""The daily Claude budget: admission (a pure decision) and reservations that cannot overshoot.

Before a Claude call a worker reserves its worst-case cost (:func:`pipeline.pricing.worst_case_usd`)
on the day's ``budget_days`` row; after it, it settles the reservation with the real cost, or
releases it when no call was made. ``spent_usd + reserved_usd`` never passes the cap in force for
the priority of the reservation, however many workers reserve at once:

- ``normal`` calls: up to ``settings.daily_budget_usd``;
- ``emergency`` calls: up to ``settings.emergency_budget_usd``, which bounds the spend of all
  priorities together (never below the daily cap: an emergency call is not refused where a normal
  one would pass).

Days are UTC dates. Money is :class:`~decimal.Decimal`, kept to 0.000001 USD (``numeric(12, 6)``).
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from enum import StrEnum
from typing import Any

import structlog
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from pipeline.db.engine import Database
from pipeline.db.models import BudgetDay
from pipeline.pricing import USD_QUANTUM
from pipeline.settings import Settings

log = structlog.get_logger(__name__)

PROVIDER_CLAUDE = "claude"
#: ``reason`` of reservations released by :func:`release_stale`.
STALE_REASON = "stale reservation"
_ZERO = Decimal(0)


class Priority(StrEnum):
    """How urgent a call is: ``emergency`` calls may spend up to the emergency cap."""

    NORMAL = "normal"
    EMERGENCY = "emergency"


def budget_day(now: dt.datetime | None = None) -> dt.date:
    """The budget day of ``now`` (default: the current time): its UTC date. A naive datetime is
    taken as UTC."""
    if now is None:
        now = dt.datetime.now(dt.UTC)
    if now.tzinfo is None:
        return now.date()
    return now.astimezone(dt.UTC).date()


def _limit(priority: Priority, cap_usd: Decimal, emergency_cap_usd: Decimal) -> Decimal:
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
        limit = _limit(Priority.EMERGENCY, self.cap_usd, self.emergency_cap_usd)
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
        ValueError: a negative cost.
    """
    if cost_usd < 0:
        raise ValueError(f"cost must be >= 0, got {cost_usd}")
    pool = "emergency" if priority is Priority.EMERGENCY else "daily"
    limit = _limit(priority, state.cap_usd, state.emergency_cap_usd)
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
    provider: str = PROVIDER_CLAUDE,
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


@dataclass(frozen=True)
class Reservation:
    """Money set aside for one call; settle or release it by ``id``."""

    id: uuid.UUID
    day: dt.date
    provider: str
    model: str
    amount_usd: Decimal
    priority: Priority


def _usd(amount: Decimal, what: str) -> Decimal:
    if amount < 0:
        raise ValueError(f"{what} must be >= 0, got {amount}")
    return Decimal(amount).quantize(USD_QUANTUM, rounding=ROUND_CEILING)


def reserve(
    db: Database,
    *,
    settings: Settings,
    model: str,
    amount_usd: Decimal,
    task_type: str,
    priority: Priority = Priority.NORMAL,
    interaction_id: int | None = None,
    provider: str = PROVIDER_CLAUDE,
    day: dt.date | None = None,
) -> Reservation | None:
    """Reserve ``amount_usd`` (rounded up to 0.000001) on the day's budget, or refuse.

    One transaction: create the day's ``budget_days`` row if missing (``INSERT ... ON CONFLICT DO
    NOTHING``), then one conditional ``UPDATE ... SET reserved_usd = reserved_usd + amount WHERE
    spent_usd + reserved_usd + amount <= limit RETURNING ...`` (limit: the daily cap, or the
    emergency cap for ``emergency`` priority), and when it matched, insert the
    ``budget_reservations`` row.

    Why concurrent reservers cannot overshoot: the UPDATE takes the row lock; under READ
    COMMITTED a second UPDATE waiting for that lock re-evaluates its WHERE clause on the newest
    committed row version (EvalPlanQual) once the first commits, so reservers serialise on the
    row and each one sees every earlier reservation. No read-then-write window exists.

    Returns:
        The reservation, or ``None`` when it would pass the cap (refused; nothing reserved).

    Raises:
        ValueError: a negative amount.
    """
    amount = _usd(amount_usd, "amount_usd")
    day = day or budget_day()
    cap = settings.daily_budget_usd
    limit = _limit(priority, cap, settings.emergency_budget_usd)
    with db.session() as session:
        session.execute(
            text(
                "INSERT INTO budget_days (day, provider, cap_usd) VALUES (:d, :p, :cap) "
                "ON CONFLICT (day, provider) DO NOTHING"
            ),
            {"d": day, "p": provider, "cap": cap},
        )
        row = session.execute(
            text(
                "UPDATE budget_days SET reserved_usd = reserved_usd + :amt, cap_usd = :cap, "
                "updated_at = now() "
                "WHERE day = :d AND provider = :p AND spent_usd + reserved_usd + :amt <= :limit "
                "RETURNING spent_usd, reserved_usd"
            ),
            {"amt": amount, "cap": cap, "d": day, "p": provider, "limit": limit},
        ).first()
        if row is None:
            log.info(
                "budget_refused",
                day=str(day),
                provider=provider,
                model=model,
                task_type=task_type,
                priority=priority.value,
                amount_usd=str(amount),
                limit_usd=str(limit),
            )
            return None
        reservation_id: uuid.UUID = session.execute(
            text(
                "INSERT INTO budget_reservations "
                "(day, provider, model, task_type, interaction_id, priority, amount_usd) "
                "VALUES (:d, :p, :model, :task, :iid, :prio, :amt) RETURNING id"
            ),
            {
                "d": day,
                "p": provider,
                "model": model,
                "task": task_type,
                "iid": interaction_id,
                "prio": priority.value,
                "amt": amount,
            },
        ).scalar_one()
    return Reservation(
        id=reservation_id,
        day=day,
        provider=provider,
        model=model,
        amount_usd=amount,
        priority=priority,
    )


def settle(db: Database, reservation_id: uuid.UUID, actual_usd: Decimal) -> bool:
    """Record the real cost of one reserved call: :func:`settle_many` for one reservation.

    Returns:
        ``True`` when this call moved the money.

    Raises:
        ValueError: a negative cost.
    """
    return reservation_id in settle_many(db, {reservation_id: actual_usd})


def settle_many(db: Database, actual_by_reservation: Mapping[uuid.UUID, Decimal]) -> set[uuid.UUID]:
    """Record the real cost of reserved calls, in one transaction: each reservation becomes
    ``settled`` and its day's ``reserved_usd`` drops by its amount while ``spent_usd`` grows by
    its actual cost (USD).

    Idempotent: settling again (or settling a released reservation) moves nothing. One
    exception: a reservation released by :func:`release_stale` (its worker looked dead but the
    call did happen) is settled late, adding its actual cost to ``spent_usd`` only, so real spend
    is never lost. An actual cost above the reserved amount (the worst case was counted wrong)
    is recorded as is, with a warning. Rows are locked and day rows updated in key order, so
    concurrent settles cannot deadlock.

    Returns:
        The reservations this call moved money for (unknown ids are left out).

    Raises:
        ValueError: a negative cost (nothing is settled).
    """
    actual: dict[uuid.UUID, Decimal] = {}
    for rid, amount_usd in actual_by_reservation.items():
        actual[rid] = Decimal(amount_usd).quantize(USD_QUANTUM)
        if actual[rid] < 0:
            raise ValueError(f"actual_usd must be >= 0, got {amount_usd}")
    if not actual:
        return set()
    with db.session() as session:
        rows = session.execute(
            text(
                "SELECT id, status, reason, amount_usd, day, provider, model "
                "FROM budget_reservations WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"
            ),
            {"ids": list(actual)},
        ).all()
        late = {r.id for r in rows if r.status == "released" and r.reason == STALE_REASON}
        moved = [r for r in rows if r.status == "reserved" or r.id in late]
        if not moved:
            return set()
        session.execute(
            text(
                "UPDATE budget_reservations SET status = 'settled', actual_usd = :actual, "
                "finished_at = now() WHERE id = :id"
            ),
            [{"actual": actual[r.id], "id": r.id} for r in moved],
        )
        held: dict[tuple[dt.date, str], Decimal] = {}
        spent: dict[tuple[dt.date, str], Decimal] = {}
        for r in moved:
            key = (r.day, r.provider)
            held[key] = held.get(key, _ZERO) + (_ZERO if r.id in late else r.amount_usd)
            spent[key] = spent.get(key, _ZERO) + actual[r.id]
        session.execute(
            text(
                "UPDATE budget_days SET reserved_usd = reserved_usd - :held, "
                "spent_usd = spent_usd + :actual, updated_at = now() "
                "WHERE day = :d AND provider = :p"
            ),
            [
                {"held": held[key], "actual": spent[key], "d": key[0], "p": key[1]}
                for key in sorted(held)
            ],
        )
    for r in moved:
        if actual[r.id] > r.amount_usd:
            log.warning(
                "budget_actual_above_reserved",
                reservation=str(r.id),
                model=r.model,
                reserved_usd=str(r.amount_usd),
                actual_usd=str(actual[r.id]),
            )
        if r.id in late:
            log.warning(
                "budget_settled_after_stale_release",
                reservation=str(r.id),
                model=r.model,
                actual_usd=str(actual[r.id]),
            )
    return {r.id for r in moved}


def release(db: Database, reservation_id: uuid.UUID, reason: str) -> bool:
    """Give one reservation's money back (the call was not made): :func:`release_many` for one.

    Returns:
        ``True`` when this call released it; ``False`` when it was not ``reserved`` (already
        settled or released) or does not exist.
    """
    return reservation_id in release_many(db, [reservation_id], reason)


def release_many(db: Database, reservation_ids: Iterable[uuid.UUID], reason: str) -> set[uuid.UUID]:
    """Give reservations' money back (their calls were not made), in one transaction: status
    ``released`` with ``reason``; each day's ``reserved_usd`` drops by their amounts.

    Returns:
        The reservations this call released; ones not ``reserved`` (already settled or
        released) or unknown are left out.
    """
    ids = list(reservation_ids)
    if not ids:
        return set()
    with db.session() as session:
        rows = session.execute(
            text(
                "UPDATE budget_reservations r SET status = 'released', reason = :reason, "
                "finished_at = now() "
                "FROM (SELECT id FROM budget_reservations WHERE id = ANY(:ids) "
                "      AND status = 'reserved' ORDER BY id FOR UPDATE) picked "
                "WHERE r.id = picked.id RETURNING r.id, r.amount_usd, r.day, r.provider"
            ),
            {"reason": reason, "ids": ids},
        ).all()
        _drop_reserved(session, rows)
    return {row[0] for row in rows}


def _drop_reserved(session: Session, released: Sequence[Any]) -> None:
    """Take released reservations' amounts (rows of ``id, amount_usd, day, provider``) off
    their days' ``reserved_usd``, one UPDATE per day row in key order."""
    held: dict[tuple[dt.date, str], Decimal] = {}
    for row in released:
        key: tuple[dt.date, str] = (row[2], row[3])
        held[key] = held.get(key, _ZERO) + row[1]
    if held:
        session.execute(
            text(
                "UPDATE budget_days SET reserved_usd = reserved_usd - :amt, "
                "updated_at = now() WHERE day = :d AND provider = :p"
            ),
            [
                {"amt": amount, "d": day, "p": provider}
                for (day, provider), amount in sorted(held.items())
            ],
        )


def release_stale(db: Database, *, older_than_s: float) -> int:
    """Release every reservation still ``reserved`` after ``older_than_s`` seconds (its worker
    died between reserve and settle), with reason ``stale reservation``.

    Rows locked by a concurrent settle or sweep are skipped (``FOR UPDATE SKIP LOCKED``), and the
    day rows are updated in key order, so two sweeps cannot deadlock.

    Returns:
        How many reservations were released.
    """
    with db.session() as session:
        rows = session.execute(
            text(
                "UPDATE budget_reservations r SET status = 'released', reason = :reason, "
                "finished_at = now() "
                "FROM (SELECT id FROM budget_reservations WHERE status = 'reserved' "
                "      AND created_at < now() - make_interval(secs => :age) "
                "      ORDER BY id FOR UPDATE SKIP LOCKED) stale "
                "WHERE r.id = stale.id RETURNING r.id, r.amount_usd, r.day, r.provider"
            ),
            {"reason": STALE_REASON, "age": older_than_s},
        ).all()
        _drop_reserved(session, rows)
    if rows:
        log.warning(
            "budget_stale_released",
            count=len(rows),
            reservations=[str(r[0]) for r in rows],
        )
    return len(rows)
