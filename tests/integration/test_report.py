"""``patterns report`` over real rows: the numbers of :func:`pipeline.ops.report.build_report`, the
JSON and table output of the command and its PNG chart."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import (
    BudgetDay,
    Interaction,
    LLMCall,
    Pattern,
    PatternRelationship,
    PatternValidation,
    Recommendation,
)
from pipeline.intake.normalize import NormalizedInteraction
from pipeline.intake.store import store
from pipeline.ops.report import build_report
from pipeline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("restore_logging")]

D = Decimal
NOW = dt.datetime.now(
    dt.UTC
)  # at collection: only its date is used below (queue ages use the time of the test)
TODAY = dt.datetime.combine(NOW.date(), dt.time(0), tzinfo=dt.UTC)
T0 = TODAY + dt.timedelta(seconds=1)  # early today
Y = TODAY - dt.timedelta(hours=12)  # yesterday noon
OLD = TODAY - dt.timedelta(days=20)  # outside a 14-day window
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _settings() -> Settings:
    return Settings(database_url=None, redis_url=None, daily_budget_usd=D("1"))


def _call(provider: str, cost: str, when: dt.datetime) -> dict[str, Any]:
    return {
        "provider": provider, "model": "m", "task_type": "pattern_extraction",
        "outcome": "ok", "cost_usd": D(cost), "created_at": when,
    }  # fmt: skip


@pytest.fixture()
def seeded(db: Database) -> Database:
    """Eight interactions in every status, patterns, calls, a budget row and one of each of
    validation, relationship and recommendation; some rows outside the window."""
    records = [
        NormalizedInteraction(
            project="acme/widgets", source="api", kind="pull_request",
            content=f"Pull request #{i}: retry architecture", idempotency_key=f"report-{i}",
        )
        for i in range(8)
    ]  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        ids = store(s, records).interaction_ids
    i = dict(enumerate(ids))
    states: list[tuple[int, dict[str, Any]]] = [
        (i[0], {"status": "extracted", "processed_at": Y}),
        (i[1], {"status": "extracted", "processed_at": T0}),
        (i[2], {"status": "failed", "processed_at": T0, "last_error": "invalid JSON"}),
        (i[3], {"status": "failed", "processed_at": Y, "last_error": "invalid JSON"}),
        (i[4], {"status": "failed", "processed_at": OLD, "last_error": "truncated",
                "created_at": OLD}),
        (i[5], {"status": "queued", "queued_at": dt.datetime.now(dt.UTC) - dt.timedelta(hours=1),
                "analysis_status": "pending"}),
        (i[6], {"status": "dead"}),
    ]  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        for iid, values in states:
            s.execute(update(Interaction).where(Interaction.id == iid).values(**values))
        project = s.scalar(select(Interaction.project_id).where(Interaction.id == i[0]))

        def pattern(title: str, source: int | None, when: dt.datetime) -> Any:
            return s.scalar(
                insert(Pattern)
                .values(project_id=project, type="architecture", title=title,
                        source_interaction_id=source, created_at=when)
                .returning(Pattern.id)
            )  # fmt: skip

        a = pattern("a", i[0], Y)
        b = pattern("b", i[0], Y)
        pattern("c", i[0], Y)
        pattern("d", i[1], T0)
        pattern("old", None, OLD)
        s.execute(
            insert(PatternRelationship).values(
                project_id=project, source_pattern_id=a, target_pattern_id=b,
                relationship_type="depends_on",
            )
        )  # fmt: skip
        s.execute(
            insert(PatternValidation).values(
                project_id=project, pattern_id=a, validator="t", validation_type="review",
                result="confirmed",
            )
        )  # fmt: skip
        s.execute(insert(Recommendation).values(project_id=project, title="r", body="b"))
        s.execute(
            insert(LLMCall),
            [
                _call("claude", "0.01", T0), _call("claude", "0.02", T0),
                _call("local", "0", T0), _call("claude", "0.5", Y), _call("claude", "9", OLD),
            ],
        )  # fmt: skip
        s.execute(
            insert(BudgetDay).values(
                day=Y.date(), provider="claude", cap_usd=D("2"), spent_usd=D("0.5")
            )
        )
    return db


def _check(report: dict[str, Any]) -> None:
    """The expected JSON report of :func:`seeded` over 14 days."""
    daily = report["daily"]
    assert len(daily) == 14 and daily[-1]["day"] == TODAY.date().isoformat()
    today, yesterday = daily[-1], daily[-2]
    assert today["interactions_created"] == 7  # all but the one dated OLD
    assert (today["extracted"], today["failed"], today["patterns_created"]) == (1, 1, 1)
    assert (yesterday["extracted"], yesterday["failed"], yesterday["patterns_created"]) == (1, 1, 3)
    assert today["llm_calls"] == {"claude": 2, "local": 1}
    assert yesterday["llm_calls"] == {"claude": 1}
    assert D(today["cost_usd"]) == D("0.03") and D(yesterday["cost_usd"]) == D("0.5")
    assert D(today["claude_spent_usd"]) == 0 and D(today["claude_cap_usd"]) == D("1")
    assert D(yesterday["claude_spent_usd"]) == D("0.5")
    assert D(yesterday["claude_cap_usd"]) == D("2")
    assert all(d["llm_calls"] == {} and D(d["cost_usd"]) == 0 for d in daily[:-2])
    assert D(report["total_cost_usd"]) == D("0.53")
    q = report["quality"]
    assert (q["extracted"], q["failed"], q["failure_rate"]) == (2, 2, 0.5)
    assert q["top_failure_reasons"] == [{"reason": "invalid JSON", "count": 2}]
    assert q["patterns_per_extracted"] == 2.0
    assert (q["validations"], q["relationships"], q["recommendations"]) == (1, 1, 1)
    h = report["queue"]
    assert h["by_status"] == {"dead": 1, "extracted": 2, "failed": 3, "queued": 1, "received": 1}
    assert 3500 < h["oldest_queued_age_s"] < 3600 + 600
    assert (h["dead"], h["pending_analyses"]) == (1, 1)


def test_build_report(seeded: Database) -> None:
    with seeded.session(ALL_PROJECTS) as s:
        report = build_report(s, settings=_settings(), days=14)
    _check(json.loads(report.model_dump_json()))
    with seeded.session(ALL_PROJECTS) as s:
        short = build_report(s, settings=_settings(), days=1)
    assert [d.day for d in short.daily] == [TODAY.date()]
    assert short.quality.failed == 1 and short.total_cost_usd == D("0.03")
    with seeded.session(ALL_PROJECTS) as s, pytest.raises(ValueError, match="at least 1"):
        build_report(s, settings=_settings(), days=0)


def _cli(args: list[str], database_url: str) -> Any:
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": "",
        "PATTERNS_DAILY_BUDGET_USD": "1",
        "COLUMNS": "200",
    }
    from pipeline.settings import get_settings

    get_settings.cache_clear()  # the command reads the environment set here
    try:
        return CliRunner().invoke(app, args, env=env)
    finally:
        get_settings.cache_clear()


def test_report_command(seeded: Database, database_url: str, tmp_path: Path) -> None:
    done = _cli(["report", "--json"], database_url)
    assert done.exit_code == 0, done.output
    _check(json.loads(done.stdout.strip().splitlines()[-1]))

    chart = tmp_path / "report.png"
    table = _cli(["report", "--days", "7", "--png", str(chart)], database_url)
    assert table.exit_code == 0, table.output
    assert "calls claude" in table.stdout and "invalid JSON" in table.stdout
    assert "0.500000 / 2" in table.stdout
    data = chart.read_bytes()
    assert data[:8] == PNG_SIGNATURE and len(data) > 1024

    bad = _cli(["report", "--days", "0"], database_url)
    assert bad.exit_code == 2
