"""Unit tests of budget admission (a pure decision) and the UTC budget day."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from pipeline.spend.budget import Admission, BudgetState, admission, budget_day
from pipeline.types import Priority

D = Decimal
DAY = dt.date(2026, 11, 21)
N, E = Priority.NORMAL, Priority.EMERGENCY


def _state(cap: str, emergency: str, spent: str, reserved: str) -> BudgetState:
    return BudgetState(DAY, D(cap), D(emergency), D(spent), D(reserved))


# (cost, cap, emergency cap, spent, reserved, priority) -> (admitted, pool, limit)
CASES = [
    pytest.param("1", "50", "100", "40", "5", N, True, "daily", "50", id="normal-under"),
    pytest.param("5", "50", "100", "40", "5", N, True, "daily", "50", id="normal-exactly-at"),
    pytest.param("5.000001", "50", "100", "40", "5", N, False, "daily", "50", id="normal-over"),
    pytest.param("0", "50", "100", "50", "0", N, True, "daily", "50", id="normal-free-when-full"),
    pytest.param("20", "50", "100", "45", "30", E, True, "emergency", "100", id="emergency-daily+"),
    pytest.param("25", "50", "100", "45", "30", E, True, "emergency", "100", id="emergency-at-cap"),
    pytest.param("26", "50", "100", "45", "30", E, False, "emergency", "100", id="emergency-over"),
    pytest.param("20", "50", "100", "45", "30", N, False, "daily", "50", id="normal-same-refused"),
    pytest.param("0.01", "0", "0", "0", "0", N, False, "daily", "0", id="zero-cap-normal"),
    pytest.param("0.01", "0", "0", "0", "0", E, False, "emergency", "0", id="zero-cap-emergency"),
    pytest.param("0.01", "0", "1", "0", "0", E, True, "emergency", "1", id="zero-daily-emergency"),
    # An emergency cap below the daily one never makes emergency calls stricter than normal ones.
    pytest.param("5", "50", "10", "40", "0", E, True, "emergency", "50", id="emergency-cap-low"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("cost", "cap", "emergency", "spent", "reserved", "priority", "admitted", "pool", "limit"),
    CASES,
)
def test_admission_table(
    cost: str,
    cap: str,
    emergency: str,
    spent: str,
    reserved: str,
    priority: Priority,
    admitted: bool,
    pool: str,
    limit: str,
) -> None:
    decision = admission(D(cost), _state(cap, emergency, spent, reserved), priority)
    assert isinstance(decision, Admission)
    assert (decision.admitted, decision.pool, decision.limit_usd) == (admitted, pool, D(limit))
    # The reason carries the figures.
    assert f"cap of {D(limit)} USD" in decision.reason
    assert str(D(cost)) in decision.reason and str(D(spent)) in decision.reason
    assert ("fits" in decision.reason) is admitted


def test_admission_refuses_negative_cost() -> None:
    with pytest.raises(ValueError):
        admission(D("-0.01"), _state("1", "2", "0", "0"), N)


def test_remaining() -> None:
    state = _state("50", "100", "30", "15")
    assert state.remaining_usd == D("5")
    assert state.emergency_remaining_usd == D("55")
    over = _state("50", "100", "60", "45")  # an actual above its reservation overshot the cap
    assert over.remaining_usd == 0
    assert over.emergency_remaining_usd == 0


def test_budget_day_is_the_utc_date() -> None:
    tokyo = dt.timezone(dt.timedelta(hours=9))
    assert budget_day(dt.datetime(2026, 11, 22, 8, 59, tzinfo=tokyo)) == dt.date(2026, 11, 21)
    assert budget_day(dt.datetime(2026, 11, 22, 9, 0, tzinfo=tokyo)) == dt.date(2026, 11, 22)
    la = dt.timezone(dt.timedelta(hours=-8))
    assert budget_day(dt.datetime(2026, 11, 21, 16, 0, tzinfo=la)) == dt.date(2026, 11, 22)
    assert budget_day(dt.datetime(2026, 11, 21, 23, 59)) == dt.date(2026, 11, 21)  # naive: UTC
    assert budget_day() == dt.datetime.now(dt.UTC).date()
