"""The cost report over real ``llm_calls`` rows, through the function, ``GET /v1/costs`` on a live
server and ``patterns costs`` in a subprocess."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from pipeline.api.app import create_app
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import LLMCall
from pipeline.ops.costs import cost_report
from pipeline.settings import Settings
from pipeline.spend.reservations import reserve, settle

pytestmark = pytest.mark.integration

D = Decimal
DAY = dt.date(2026, 11, 21)
NOON = dt.datetime(2026, 11, 21, 12, tzinfo=dt.UTC)
PATTERNS = Path(sys.executable).parent / "patterns"
TOKEN = "admin-s3cret"
Serve = Callable[[Any], AbstractContextManager[str]]


def _settings(**extra: Any) -> Settings:
    return Settings(
        database_url=None,
        redis_url=None,
        daily_budget_usd=D("1"),
        emergency_budget_usd=D("2"),
        claude_model="claude-sonnet-5-5",
        **extra,
    )


def _call(provider: str, model: str, t_in: int, t_out: int, **kw: Any) -> dict[str, Any]:
    return {
        "provider": provider, "model": model, "task_type": "pattern_extraction",
        "tokens_in": t_in, "tokens_out": t_out, "outcome": "ok", "created_at": NOON, **kw,
    }  # fmt: skip


@pytest.fixture()
def seeded(db: Database) -> Database:
    """Two Claude models, the local model, a zero-token call, a deferred (unsent) call, calls
    just outside the day, and a settled and an open reservation."""
    rows = [
        _call("claude", "claude-sonnet-5-5", 1000, 200, cache_read_tokens=3000,
              cache_write_tokens=500, cost_usd=D("0.01")),
        _call("claude", "claude-sonnet-5-5", 2000, 100, cost_usd=D("0.005")),
        _call("claude", "claude-haiku-4-5", 500, 50, cost_usd=D("0.00075")),
        _call("claude", "claude-opus-5", 0, 0, outcome="error"),
        # Never sent (the budget refused it): not a call.
        _call("claude", "claude-sonnet-5-5", 0, 0, outcome="deferred"),
        _call("local", "SmolLM2-135M-Instruct", 1000, 100),
        _call("local", "SmolLM2-135M-Instruct", 2000, 200),
        _call("local", "SmolLM2-135M-Instruct", 3000, 300),
        _call("local", "SmolLM2-135M-Instruct", 150_000, 0),
        # Outside the UTC day on either side.
        _call("claude", "claude-sonnet-5-5", 9999, 9999, cost_usd=D("9"),
              created_at=dt.datetime(2026, 11, 20, 23, 59, 59, tzinfo=dt.UTC)),
        _call("local", "SmolLM2-135M-Instruct", 9999, 9999,
              created_at=dt.datetime(2026, 11, 22, 0, 0, tzinfo=dt.UTC)),
    ]  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        s.execute(insert(LLMCall), rows)
    settings = _settings()
    kw = {"settings": settings, "model": "claude-sonnet-5-5", "task_type": "x", "day": DAY}
    done = reserve(db, amount_usd=D("0.5"), **kw)  # type: ignore[arg-type]
    assert done is not None and settle(db, done.id, D("0.3"))
    assert reserve(db, amount_usd=D("0.2"), **kw) is not None  # type: ignore[arg-type]
    return db


def _check(report: dict[str, Any]) -> None:
    """The expected report of :func:`seeded` with claude-sonnet-5-5, as JSON."""
    assert report["day"] == "2026-11-21"
    money = {k: D(report[k]) for k in ("cap_usd", "emergency_cap_usd", "spent_usd",
             "reserved_usd", "remaining_usd", "emergency_remaining_usd")}  # fmt: skip
    assert money == {
        "cap_usd": D("1"), "emergency_cap_usd": D("2"), "spent_usd": D("0.3"),
        "reserved_usd": D("0.2"), "remaining_usd": D("0.5"), "emergency_remaining_usd": D("1.5"),
    }  # fmt: skip
    assert report["reservations_open"] == 1
    by = {(m["provider"], m["model"]): m for m in report["by_model"]}
    assert set(by) == {
        ("claude", "claude-sonnet-5-5"), ("claude", "claude-haiku-4-5"),
        ("claude", "claude-opus-5"), ("local", "SmolLM2-135M-Instruct"),
    }  # fmt: skip
    sonnet = by[("claude", "claude-sonnet-5-5")]
    assert (sonnet["calls"], sonnet["tokens_in"], sonnet["tokens_out"]) == (2, 3000, 300)
    assert (sonnet["cache_read_tokens"], sonnet["cache_write_tokens"]) == (3000, 500)
    assert D(sonnet["cost_usd"]) == D("0.015")
    assert sonnet["cache_hit_rate"] == pytest.approx(3000 / 6500)
    assert by[("claude", "claude-haiku-4-5")]["cache_hit_rate"] == 0
    assert by[("claude", "claude-opus-5")]["cache_hit_rate"] is None
    local = by[("local", "SmolLM2-135M-Instruct")]
    assert (local["calls"], local["tokens_in"], local["tokens_out"]) == (4, 156_000, 600)
    assert report["totals"]["calls"] == 8
    assert D(report["totals"]["cost_usd"]) == D("0.01575")
    assert report["local_calls"] == 4
    assert report["local_calls_on_claude_model"] == "claude-sonnet-5-5"
    # 156000 * 2 + 600 * 10 = 318000 USD per million tokens.
    assert D(report["local_calls_on_claude_usd"]) == D("0.318")


def test_cost_report(seeded: Database) -> None:
    with seeded.session(ALL_PROJECTS) as s:
        report = cost_report(s, settings=_settings(), day=DAY)
    _check(json.loads(report.model_dump_json()))


def test_local_calls_priced_with_the_long_prompt_tier(seeded: Database) -> None:
    settings = _settings().model_copy(update={"claude_model": "claude-haiku-5-5"})
    with seeded.session(ALL_PROJECTS) as s:
        report = cost_report(s, settings=settings, day=DAY)
    # Short calls: 6000 * 0.10 + 600 * 0.50 = 900; the 150k-token one at 5x: 150000 * 0.10 * 5.
    assert report.local_calls_on_claude_usd == D("0.0759")
    assert report.local_calls_on_claude_model == "claude-haiku-5-5"


def test_cost_report_of_an_empty_day(db: Database) -> None:
    with db.session(ALL_PROJECTS) as s:
        report = cost_report(s, settings=_settings(), day=dt.date(2030, 1, 1))
    assert report.by_model == [] and report.totals.calls == 0 and report.totals.cost_usd == 0
    assert (report.spent_usd, report.reserved_usd, report.remaining_usd) == (0, 0, D("1"))
    assert report.local_calls_on_claude_usd == 0
    unpriced = _settings().model_copy(update={"claude_model": "some-other-model"})
    with db.session(ALL_PROJECTS) as s:
        assert cost_report(s, settings=unpriced, day=DAY).local_calls_on_claude_usd is None


def test_costs_endpoint_with_admin_token(seeded: Database, live_server: Serve) -> None:
    app = create_app(_settings(admin_token=TOKEN), db=seeded)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/v1/costs", params={"day": "2026-11-21"}).status_code == 401
        wrong = client.get(
            "/v1/costs", params={"day": "2026-11-21"}, headers={"Authorization": "Bearer nope"}
        )
        assert wrong.status_code == 401
        assert wrong.headers["www-authenticate"] == "Bearer"
        auth = {"Authorization": f"Bearer {TOKEN}"}
        ok = client.get("/v1/costs", params={"day": "2026-11-21"}, headers=auth)
        assert ok.status_code == 200, ok.text
        _check(ok.json())
        for bad in ("2026-13-01", "yesterday", "21/11/2026"):
            resp = client.get("/v1/costs", params={"day": bad}, headers=auth)
            assert resp.status_code == 422, (bad, resp.text)
        today = client.get("/v1/costs", headers=auth)
        assert today.status_code == 200
        assert today.json()["day"] == dt.datetime.now(dt.UTC).date().isoformat()


@pytest.mark.parametrize("configured", [None, ""])
def test_costs_endpoint_closed_without_admin_token(
    seeded: Database, live_server: Serve, configured: str | None
) -> None:
    """Closed by default: with no admin token configured (unset, or set to an empty string)
    the operator report answers 403 whatever the request carries."""
    app = create_app(_settings(admin_token=configured), db=seeded)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        for headers in ({}, {"Authorization": "Bearer x"}, {"Authorization": f"Bearer {TOKEN}"}):
            resp = client.get("/v1/costs", params={"day": "2026-11-21"}, headers=headers)
            assert resp.status_code == 403, (headers, resp.text)
            assert "PATTERNS_ADMIN_TOKEN" in resp.json()["detail"]
            assert "spent_usd" not in resp.text


def _cli(args: list[str], database_url: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PATTERNS_")}
    base.pop("REDIS_URL", None)
    env = {
        **base,
        "DATABASE_URL": database_url,
        "PATTERNS_DAILY_BUDGET_USD": "1",
        "PATTERNS_EMERGENCY_BUDGET_USD": "2",
        "PATTERNS_CLAUDE_MODEL": "claude-sonnet-5-5",
        "COLUMNS": "200",  # rich wraps at 80 columns when stdout is not a terminal
    }
    return subprocess.run(
        [str(PATTERNS), *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_costs_command(seeded: Database, database_url: str) -> None:
    done = _cli(["costs", "--json", "--day", "2026-11-21"], database_url)
    assert done.returncode == 0, done.stderr
    _check(json.loads(done.stdout.strip().splitlines()[-1]))
    table = _cli(["costs", "--day", "2026-11-21"], database_url)
    assert table.returncode == 0, table.stderr
    assert (
        "claude-haiku-4-5" in table.stdout and "0.318000 USD on claude-sonnet-5-5" in table.stdout
    )
    bad = _cli(["costs", "--day", "2026-11-31"], database_url)
    assert bad.returncode == 2
    assert "YYYY-MM-DD" in bad.stderr
