"""Reservations against the day's budget: reserve before a call, settle or release after it.

:func:`reserve` takes the worst case in one conditional ``UPDATE`` of ``budget_days`` (concurrent
reservers serialise on the row and cannot pass the cap; see its docstring); :func:`settle_many`
records the real cost and :func:`release_many` gives the money back, each in one transaction;
:func:`release_stale` frees reservations whose lease lapsed (their worker died). The pure half
(caps, admission) is :mod:`pipeline.spend.budget`; renewing leases is :mod:`pipeline.spend.leases`.

The invariant: ``spent_usd <= cap`` unless a provider call was already paid for outside a live
lease. A reservation is a lease (``lease_expires_at``, ``PATTERNS_BUDGET_LEASE_S``) that the call
in flight renews, so only a worker that stopped renewing for a whole lease loses its money to
:func:`release_stale`. If such a call still finishes, its settle records the real cost (the
money was spent at the provider; hiding it would make the books lie), which may take the day
past the cap; every later :func:`reserve` then refuses (its conditional UPDATE needs
``spent + reserved + amount <= limit``), so no new call is admitted until the day has room
again: the overshoot is bounded by the late settles themselves.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.orm import Session

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.status import ReservationStatus
from pipeline.errors import InvalidValueError
from pipeline.settings import Settings
from pipeline.spend.budget import budget_day, limit_for
from pipeline.spend.pricing import USD_QUANTUM
from pipeline.types import Priority, Provider

log = structlog.get_logger(__name__)

#: ``reason`` of reservations released by :func:`release_stale`.
STALE_REASON = "stale reservation"
_ZERO = Decimal(0)


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
        raise InvalidValueError(f"{what} must be >= 0, got {amount}")
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
    provider: str = Provider.CLAUDE,
    day: dt.date | None = None,
) -> Reservation | None:
    """Reserve ``amount_usd`` (rounded up to 0.000001) on the day's budget, or refuse.

    One transaction: create the day's ``budget_days`` row if missing (``INSERT ... ON CONFLICT DO
    NOTHING``), then one conditional ``UPDATE ... SET reserved_usd = reserved_usd + amount WHERE
    spent_usd + reserved_usd + amount <= limit RETURNING ...`` (limit: the daily cap, or the
    emergency cap for ``emergency`` priority), and when it matched, insert the
    ``budget_reservations`` row, its lease ending ``settings.budget_lease_s`` seconds from now
    (renew it with :func:`pipeline.spend.leases.renew` while the call is in flight).

    Why concurrent reservers cannot overshoot: the UPDATE takes the row lock; under READ
    COMMITTED a second UPDATE waiting for that lock re-evaluates its WHERE clause on the newest
    committed row version (EvalPlanQual) once the first commits, so reservers serialise on the
    row and each one sees every earlier reservation. No read-then-write window exists.

    Returns:
        The reservation, or ``None`` when it would pass the cap (refused; nothing reserved).

    Raises:
        InvalidValueError: a negative amount.
    """
    amount = _usd(amount_usd, "amount_usd")
    day = day or budget_day()
    cap = settings.daily_budget_usd
    limit = limit_for(priority, cap, settings.emergency_budget_usd)
    with db.session(ALL_PROJECTS) as session:
        if not _take(session, day, provider, amount, cap, limit):
            log.info(
                "budget_refused", day=str(day), provider=provider, model=model,
                task_type=task_type, priority=priority.value, amount_usd=str(amount),
                limit_usd=str(limit),
            )  # fmt: skip
            return None
        reservation_id: uuid.UUID = session.execute(
            text(
                "INSERT INTO budget_reservations (day, provider, model, task_type, "
                "interaction_id, priority, amount_usd, lease_expires_at) "
                "VALUES (:d, :p, :model, :task, :iid, :prio, :amt, "
                "now() + make_interval(secs => :lease)) RETURNING id"
            ),
            {"d": day, "p": provider, "model": model, "task": task_type,
             "iid": interaction_id, "prio": priority.value, "amt": amount,
             "lease": settings.budget_lease_s},
        ).scalar_one()  # fmt: skip
    return Reservation(reservation_id, day, provider, model, amount, priority)


def _take(
    session: Session, day: dt.date, provider: str, amount: Decimal, cap: Decimal, limit: Decimal
) -> bool:
    """Add ``amount`` to the day's ``reserved_usd`` if ``spent + reserved + amount <= limit``
    (creating the day's row first); whether it fitted."""
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
    return row is not None


def settle(db: Database, reservation_id: uuid.UUID, actual_usd: Decimal) -> bool:
    """Record the real cost of one reserved call: :func:`settle_many` for one reservation.

    Returns:
        ``True`` when this call moved the money.

    Raises:
        InvalidValueError: a negative cost.
    """
    return reservation_id in settle_many(db, {reservation_id: actual_usd})


def settle_many(db: Database, actual_by_reservation: Mapping[uuid.UUID, Decimal]) -> set[uuid.UUID]:
    """Record the real cost of reserved calls, in one transaction: each reservation becomes
    ``settled`` and its day's ``reserved_usd`` drops by its amount while ``spent_usd`` grows by
    its actual cost (USD).

    Idempotent: settling again (or settling a released reservation) moves nothing. One
    exception: a reservation released by :func:`release_stale` (its lease lapsed but the call
    did happen) is settled late, adding its actual cost to ``spent_usd`` only, so real spend is
    never lost. Its money may have been reserved again meanwhile, so this can take the day past
    its cap (logged as ``budget_over_cap_after_late_settle``); :func:`reserve` then admits
    nothing more until the day has room (see the module docstring). An actual cost above the
    reserved amount (the worst case was counted wrong) is recorded as is, with a warning. Rows
    are locked and day rows updated in key order, so concurrent settles cannot deadlock.

    Returns:
        The reservations this call moved money for (unknown ids are left out).

    Raises:
        InvalidValueError: a negative cost (nothing is settled).
    """
    actual: dict[uuid.UUID, Decimal] = {}
    for rid, amount_usd in actual_by_reservation.items():
        actual[rid] = Decimal(amount_usd).quantize(USD_QUANTUM)
        if actual[rid] < 0:
            raise InvalidValueError(f"actual_usd must be >= 0, got {amount_usd}")
    if not actual:
        return set()
    with db.session(ALL_PROJECTS) as session:
        rows = session.execute(
            text(
                "SELECT id, status, reason, amount_usd, day, provider, model "
                "FROM budget_reservations WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"
            ),
            {"ids": list(actual)},
        ).all()
        late = {
            r.id
            for r in rows
            if r.status == ReservationStatus.RELEASED and r.reason == STALE_REASON
        }
        moved = [r for r in rows if r.status == ReservationStatus.RESERVED or r.id in late]
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
        over = []
        for key in sorted(held):
            row = session.execute(
                text(
                    "UPDATE budget_days SET reserved_usd = reserved_usd - :held, "
                    "spent_usd = spent_usd + :actual, updated_at = now() "
                    "WHERE day = :d AND provider = :p RETURNING spent_usd, reserved_usd, cap_usd"
                ),
                {"held": held[key], "actual": spent[key], "d": key[0], "p": key[1]},
            ).first()
            if late and row is not None and row.spent_usd + row.reserved_usd > row.cap_usd:
                over.append((key, row))
    _warn_unusual(moved, actual, late)
    for (day, provider), row in over:
        log.error(
            "budget_over_cap_after_late_settle", day=str(day), provider=provider,
            spent_usd=str(row.spent_usd), reserved_usd=str(row.reserved_usd),
            cap_usd=str(row.cap_usd),
        )  # fmt: skip
    return {r.id for r in moved}


def _warn_unusual(
    moved: Sequence[Any], actual: Mapping[uuid.UUID, Decimal], late: set[uuid.UUID]
) -> None:
    """Log settles that cost more than reserved, and late settles of stale releases."""
    for r in moved:
        if actual[r.id] > r.amount_usd:
            log.warning(
                "budget_actual_above_reserved", reservation=str(r.id), model=r.model,
                reserved_usd=str(r.amount_usd), actual_usd=str(actual[r.id]),
            )  # fmt: skip
        if r.id in late:
            log.warning(
                "budget_settled_after_stale_release", reservation=str(r.id), model=r.model,
                actual_usd=str(actual[r.id]),
            )  # fmt: skip


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
    with db.session(ALL_PROJECTS) as session:
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


def release_stale(db: Database) -> int:
    """Release every reservation still ``reserved`` whose lease (``lease_expires_at``) has
    lapsed: its worker stopped renewing it (died between reserve and settle). Reason
    ``stale reservation``; a live call renews its lease (:mod:`pipeline.spend.leases`), so its
    age alone never releases it.

    Rows locked by a concurrent settle or sweep are skipped (``FOR UPDATE SKIP LOCKED``), and the
    day rows are updated in key order, so two sweeps cannot deadlock.

    Returns:
        How many reservations were released.
    """
    with db.session(ALL_PROJECTS) as session:
        rows = session.execute(
            text(
                "UPDATE budget_reservations r SET status = 'released', reason = :reason, "
                "finished_at = now() "
                "FROM (SELECT id FROM budget_reservations WHERE status = 'reserved' "
                "      AND lease_expires_at < now() "
                "      ORDER BY id FOR UPDATE SKIP LOCKED) stale "
                "WHERE r.id = stale.id RETURNING r.id, r.amount_usd, r.day, r.provider"
            ),
            {"reason": STALE_REASON},
        ).all()
        _drop_reserved(session, rows)
    if rows:
        log.warning(
            "budget_stale_released",
            count=len(rows),
            reservations=[str(r[0]) for r in rows],
        )
    return len(rows)
