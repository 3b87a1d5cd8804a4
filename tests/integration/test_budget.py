"""Budget reservations on the real embedded Postgres: many workers at once never overspend."""

from __future__ import annotations

import datetime as dt
import random
import threading
from decimal import Decimal

import pytest
from sqlalchemy import select, text

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import BudgetDay, BudgetReservation
from pipeline.settings import Settings
from pipeline.spend.budget import budget_state
from pipeline.spend.reservations import (
    STALE_REASON,
    Reservation,
    release,
    release_many,
    release_stale,
    reserve,
    settle,
    settle_many,
)
from pipeline.types import Priority

pytestmark = pytest.mark.integration

D = Decimal
DAY = dt.date(2026, 11, 21)
MODEL = "claude-sonnet-5-5"


def _settings(cap: str, emergency: str = "0") -> Settings:
    return Settings(daily_budget_usd=D(cap), emergency_budget_usd=D(emergency))


def _day_row(db: Database, day: dt.date = DAY) -> tuple[Decimal, Decimal, Decimal]:
    with db.session(ALL_PROJECTS) as s:
        row = s.execute(
            select(BudgetDay.cap_usd, BudgetDay.spent_usd, BudgetDay.reserved_usd).where(
                BudgetDay.day == day, BudgetDay.provider == "claude"
            )
        ).one()
    return row[0], row[1], row[2]


def _reserve(db: Database, settings: Settings, amount: str, **kw: object) -> Reservation | None:
    return reserve(
        db, settings=settings, model=MODEL, amount_usd=D(amount), task_type="complex_reasoning",
        day=DAY, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_fifty_concurrent_reservers_get_exactly_what_the_budget_affords(
    database_url: str,
) -> None:
    settings = _settings("0.70")
    threads_n = 50
    # Enough pooled connections for every thread to hold its own transaction at once.
    db = Database.from_url(database_url, pool_size=threads_n, max_overflow=0)
    barrier = threading.Barrier(threads_n)
    results: list[Reservation | None] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker() -> None:
        try:
            barrier.wait(timeout=30)
            got = _reserve(db, settings, "0.10")
            with lock:
                results.append(got)
        except BaseException as exc:  # reported in the main thread
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(threads_n)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert len(results) == threads_n
        won = [r for r in results if r is not None]
        assert len(won) == 7
        assert len({r.id for r in won}) == 7
        assert all(r.amount_usd == D("0.10") and r.day == DAY for r in won)
        cap, spent, reserved = _day_row(db)
        assert (cap, spent, reserved) == (D("0.70"), D("0"), D("0.70"))
        with db.session(ALL_PROJECTS) as s:
            rows = s.scalars(select(BudgetReservation)).all()
        assert len(rows) == 7 and {r.status for r in rows} == {"reserved"}

        rng = random.Random(7)
        for r in won:
            actual = D(rng.randint(0, 100_000)) / D(1_000_000)  # 0 .. 0.10
            assert settle(db, r.id, actual)
        cap, spent, reserved = _day_row(db)
        assert reserved == 0
        assert 0 <= spent <= cap
        with db.session(ALL_PROJECTS) as s:
            settled = s.scalars(select(BudgetReservation.actual_usd)).all()
        assert sum(settled, D(0)) == spent

        # Settling twice moves nothing.
        assert not settle(db, won[0].id, D("0.05"))
        assert _day_row(db) == (cap, spent, reserved)
        # What the settled calls did not use can be reserved again, not a micro-dollar more.
        left = cap - spent
        assert _reserve(db, settings, str(left + D("0.000001"))) is None
        assert _reserve(db, settings, str(left)) is not None
        assert _day_row(db) == (cap, spent, left)
    finally:
        db.dispose()


def test_release_returns_the_money_and_only_once(db: Database) -> None:
    settings = _settings("1")
    first = _reserve(db, settings, "0.60")
    assert first is not None
    assert _reserve(db, settings, "0.50") is None  # 0.60 + 0.50 > 1
    assert release(db, first.id, "call not made")
    assert _day_row(db) == (D("1"), D("0"), D("0"))
    assert not release(db, first.id, "again")
    assert not settle(db, first.id, D("0.10"))  # released by hand: not settled later
    assert _day_row(db) == (D("1"), D("0"), D("0"))
    with db.session(ALL_PROJECTS) as s:
        row = s.get(BudgetReservation, first.id)
        assert row is not None
        assert (row.status, row.reason, row.actual_usd) == ("released", "call not made", None)
        assert row.finished_at is not None
    assert _reserve(db, settings, "0.50") is not None


def test_actual_above_the_reservation_is_recorded_as_is(db: Database) -> None:
    r = _reserve(db, _settings("1"), "0.10")
    assert r is not None
    assert settle(db, r.id, D("0.25"))
    assert _day_row(db) == (D("1"), D("0.25"), D("0"))


def test_emergency_passes_the_daily_cap_but_not_the_emergency_cap(db: Database) -> None:
    settings = _settings("1", "1.5")
    assert _reserve(db, settings, "0.90") is not None
    assert _reserve(db, settings, "0.20") is None  # normal: 1.10 > 1
    urgent = _reserve(db, settings, "0.50", priority=Priority.EMERGENCY)
    assert urgent is not None and urgent.priority is Priority.EMERGENCY
    assert _reserve(db, settings, "0.11", priority=Priority.EMERGENCY) is None  # 1.51 > 1.5
    assert _reserve(db, settings, "0.10", priority=Priority.EMERGENCY) is not None  # 1.50
    with db.session(ALL_PROJECTS) as s:
        state = budget_state(s, settings=settings, day=DAY)
        priorities = sorted(s.scalars(select(BudgetReservation.priority)).all())
    assert state.reserved_usd == D("1.5") and state.spent_usd == 0
    assert state.remaining_usd == 0 and state.emergency_remaining_usd == 0
    assert priorities == ["emergency", "emergency", "normal"]


def test_release_stale_releases_only_lapsed_leases(db: Database) -> None:
    settings = _settings("10")
    old = [_reserve(db, settings, "1") for _ in range(3)]
    fresh = _reserve(db, settings, "2")
    done = _reserve(db, settings, "0.5")
    assert all(old) and fresh and done
    assert settle(db, done.id, D("0.4"))
    with db.session(ALL_PROJECTS) as s:
        s.execute(
            text(
                "UPDATE budget_reservations SET lease_expires_at = now() - interval '1 second' "
                "WHERE id = ANY(:ids)"
            ),
            {"ids": [r.id for r in old if r] + [done.id]},
        )
    assert release_stale(db) == 3
    assert _day_row(db) == (D("10"), D("0.4"), D("2"))
    with db.session(ALL_PROJECTS) as s:
        rows = {r.id: r for r in s.scalars(select(BudgetReservation))}
    assert all(rows[r.id].status == "released" for r in old if r)
    assert all(rows[r.id].reason == STALE_REASON for r in old if r)
    assert rows[fresh.id].status == "reserved" and rows[done.id].status == "settled"
    assert release_stale(db) == 0
    # A worker that only looked dead settles late: its real spend is still counted, once.
    assert old[0] is not None
    assert settle(db, old[0].id, D("0.7"))
    assert not settle(db, old[0].id, D("0.7"))
    assert _day_row(db) == (D("10"), D("1.1"), D("2"))


def test_settle_many_and_release_many_move_each_reservation_once(db: Database) -> None:
    """The batch forms the Message Batches engine uses: one transaction per call, over
    reservations in every state and on two days."""
    settings = _settings("10")
    a, b, c, d, e = (_reserve(db, settings, "1") for _ in range(5))
    other_day = reserve(
        db, settings=settings, model=MODEL, amount_usd=D("2"), task_type="complex_reasoning",
        day=DAY + dt.timedelta(days=1),
    )  # fmt: skip
    assert a and b and c and d and e and other_day
    assert settle(db, a.id, D("0.5"))  # already settled: not moved again
    with db.session(ALL_PROJECTS) as s:  # e's worker looked dead: released as stale, settled late
        s.execute(
            text("UPDATE budget_reservations SET lease_expires_at = now() - interval '1 second' "
                 "WHERE id = :id"), {"id": e.id},
        )  # fmt: skip
    assert release_stale(db) == 1
    with pytest.raises(ValueError):
        settle_many(db, {b.id: D("0.1"), c.id: D("-0.1")})
    assert _day_row(db) == (D("10"), D("0.5"), D("3"))  # nothing settled by the refused call

    moved = settle_many(db, {a.id: D("9"), b.id: D("0.25"), e.id: D("0.75")})
    assert moved == {b.id, e.id}
    assert _day_row(db) == (D("10"), D("1.5"), D("2"))  # b's 1 released, e held nothing
    assert release_many(db, [a.id, c.id, d.id, other_day.id], "batch result expired") == {
        c.id,
        d.id,
        other_day.id,
    }
    assert _day_row(db) == (D("10"), D("1.5"), D("0"))
    assert _day_row(db, DAY + dt.timedelta(days=1)) == (D("10"), D("0"), D("0"))
    assert release_many(db, [c.id], "again") == set()
    assert settle_many(db, {}) == set() and release_many(db, [], "none") == set()
    with db.session(ALL_PROJECTS) as s:
        rows = {r.id: r for r in s.scalars(select(BudgetReservation))}
    assert [rows[r.id].status for r in (a, b, c, d, e)] == [
        "settled", "settled", "released", "released", "settled",
    ]  # fmt: skip
    assert rows[c.id].reason == "batch result expired"
    assert rows[a.id].actual_usd == D("0.5") and rows[b.id].actual_usd == D("0.25")


def test_the_budget_row_is_per_utc_day(db: Database) -> None:
    settings = _settings("1")
    monday, tuesday = dt.date(2026, 11, 23), dt.date(2026, 11, 24)
    kw = {"settings": settings, "model": MODEL, "task_type": "decision_making"}
    assert reserve(db, amount_usd=D("1"), day=monday, **kw) is not None  # type: ignore[arg-type]
    assert reserve(db, amount_usd=D("0.01"), day=monday, **kw) is None  # type: ignore[arg-type]
    assert reserve(db, amount_usd=D("1"), day=tuesday, **kw) is not None  # type: ignore[arg-type]
    assert _day_row(db, monday)[2] == D("1") and _day_row(db, tuesday)[2] == D("1")
    # Without a day: today's UTC date.
    today = reserve(db, amount_usd=D("0.5"), **kw)  # type: ignore[arg-type]
    assert today is not None and today.day == dt.datetime.now(dt.UTC).date()
    with db.session(ALL_PROJECTS) as s:
        days = sorted(s.scalars(select(BudgetDay.day)).all())
    assert days == sorted({monday, tuesday, today.day})


def test_cap_change_applies_to_the_next_reservation(db: Database) -> None:
    assert _reserve(db, _settings("1"), "0.8") is not None
    assert _reserve(db, _settings("1"), "0.3") is None
    assert _reserve(db, _settings("2"), "0.3") is not None  # cap raised in settings
    assert _day_row(db) == (D("2"), D("0"), D("1.1"))


def test_the_app_role_may_use_reservations(db: Database) -> None:
    """Migration 0002 grants ``patterns_app`` on the new table (0001's grant covered only the
    tables that existed then)."""
    r = _reserve(db, _settings("1"), "0.1")
    assert r is not None
    with db.session(ALL_PROJECTS) as s:
        s.execute(text("SET LOCAL ROLE patterns_app"))
        assert s.scalar(text("SELECT count(*) FROM budget_reservations")) == 1
        s.execute(text("UPDATE budget_reservations SET reason = 'checked'"))
