"""The explorer's pure parts (no I/O but the file system): the SVG chart, where sign-in may send
a browser back to, the admin token check, the vendored scripts' lookup, and the templates'
filters."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.requests import Request

from pipeline.ops.report import DayStats
from pipeline.settings import Settings
from pipeline.ui.auth import is_admin_token, safe_next, token_digest
from pipeline.ui.chart import daily_chart
from pipeline.ui.render import PATTERN_TYPES, TYPE_COLORS, templates
from pipeline.ui.vendor import VENDORED, available, vendored_file


def _day(i: int, patterns: int, spent: str) -> DayStats:
    return DayStats(
        day=dt.date(2026, 12, 1) + dt.timedelta(days=i), interactions_created=patterns,
        extracted=patterns, failed=0, patterns_created=patterns, llm_calls={"local": patterns},
        cost_usd=Decimal(spent), claude_spent_usd=Decimal(spent), claude_cap_usd=Decimal(50),
    )  # fmt: skip


def test_the_chart_draws_one_bar_and_point_per_day_scaled_to_the_largest() -> None:
    days = [_day(0, 4, "0"), _day(1, 8, "25"), _day(2, 0, "50")]
    svg = str(daily_chart(days))
    assert svg.startswith("<svg") and svg.count("<rect") == 3 and svg.count("<circle") == 3
    assert 'role="img"' in svg and "<title" in svg and "<desc" in svg
    assert "2026-12-02: 8 patterns" in svg and "$25.0000 of $50.00" in svg
    assert "<script" not in svg
    # The tallest bar spans the whole panel; an empty day has none.
    assert 'height="110.0"' in svg and 'height="0.0"' in svg


def test_the_chart_of_no_days_is_still_an_svg() -> None:
    svg = str(daily_chart([]))
    assert svg.startswith("<svg") and svg.endswith("</svg>") and "<rect" not in svg


def _request(root: str = "/ui") -> Request:
    return Request({"type": "http", "method": "GET", "path": "/", "root_path": root,
                    "headers": [], "query_string": b""})  # fmt: skip


@pytest.mark.parametrize(
    ("target", "allowed"),
    [
        ("/ui/graph", True),
        ("/ui/patterns/1?x=1", True),
        (None, False),
        ("", False),
        ("/v1/costs", False),
        ("https://evil.example/ui/x", False),
        ("//evil.example/ui/x", False),
        ("/ui\\evil", False),
        ("/ui/\nSet-Cookie: x", False),
        ("/uiother", False),
    ],
)
def test_sign_in_sends_back_only_to_explorer_pages(target: str | None, allowed: bool) -> None:
    assert safe_next(_request(), target) == (target if allowed else None)


def test_the_admin_token_must_be_configured_and_equal() -> None:
    closed = Settings(database_url=None, redis_url=None)  # type: ignore[call-arg]
    assert not is_admin_token(closed, "") and not is_admin_token(closed, "anything")
    empty = Settings(database_url=None, redis_url=None, admin_token=SecretStr(""))  # type: ignore[call-arg]
    assert not is_admin_token(empty, "")
    open_ = Settings(database_url=None, redis_url=None, admin_token=SecretStr("s3cret"))  # type: ignore[call-arg]
    assert is_admin_token(open_, "s3cret") and not is_admin_token(open_, "s3cret ")
    assert token_digest("s3cret") != "s3cret" and len(token_digest("s3cret")) == 64


def test_vendored_scripts_are_found_only_where_installed(tmp_path: Path) -> None:
    settings = Settings(database_url=None, redis_url=None, ui_vendor_dir=tmp_path)  # type: ignore[call-arg]
    assert available(settings) == dict.fromkeys(VENDORED, False)
    target = tmp_path / VENDORED["cytoscape.min.js"]
    target.parent.mkdir(parents=True)
    target.write_text("/* cytoscape */")
    assert vendored_file(settings, "cytoscape.min.js") == target
    assert available(settings)["cytoscape.min.js"] and not available(settings)["htmx.min.js"]
    assert vendored_file(settings, "../../etc/passwd") is None  # only the listed names


def test_every_pattern_type_has_a_colour_and_filters_format() -> None:
    assert set(TYPE_COLORS) == set(PATTERN_TYPES)
    env = templates.env
    assert env.filters["pct"](0.256, 1) == "25.6 %" and env.filters["pct"](None) == "n/a"
    assert env.filters["num"](Decimal("12.5")) == "12.50"
    when = dt.datetime(2026, 12, 5, 11, 0, tzinfo=dt.UTC)
    assert env.filters["when"](when.isoformat()) == "2026-12-05 11:00 UTC"
    # Autoescaped: a title cannot become markup.
    rendered = env.from_string("{{ t }}").render(t="<script>x</script>")
    assert "<script>" not in rendered and "&lt;script&gt;" in rendered
