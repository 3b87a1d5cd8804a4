"""``patterns costs``: the day's Claude budget and model spend
(:func:`pipeline.ops.costs.cost_report`)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import open_db, start
from pipeline.db.engine import ALL_PROJECTS


def _parse_day(value: str | None) -> dt.date | None:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise typer.BadParameter(f"not a YYYY-MM-DD date: {value!r}") from exc


def costs(
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the report as one JSON line.")
    ] = False,
    day: Annotated[
        str | None, typer.Option("--day", help="UTC day, YYYY-MM-DD. Default: today (UTC).")
    ] = None,
) -> None:
    """The day's Claude budget (cap, spent, reserved, remaining) and calls, tokens and dollars
    per model, with what the local model's calls would have cost on Claude."""
    from pipeline.ops.costs import cost_report

    when = _parse_day(day)
    settings = start(json_logs=json_out)
    with open_db(settings) as db, db.session(ALL_PROJECTS) as session:
        report = cost_report(session, settings=settings, day=when)
    if json_out:
        typer.echo(report.model_dump_json())
        return
    console = Console()
    budget = Table(title=f"Claude budget {report.day} (UTC), USD", show_header=False)
    budget.add_row("cap", str(report.cap_usd))
    budget.add_row("emergency cap", str(report.emergency_cap_usd))
    budget.add_row("spent", str(report.spent_usd))
    budget.add_row("reserved", f"{report.reserved_usd} ({report.reservations_open} open)")
    budget.add_row("remaining", str(report.remaining_usd))
    budget.add_row("emergency remaining", str(report.emergency_remaining_usd))
    console.print(budget)
    calls = Table(title="LLM calls by model")
    for column in ("provider", "model", "calls", "tokens in", "tokens out", "cache read",
                   "cache write", "cost USD", "cache hit"):  # fmt: skip
        calls.add_column(column, justify="left" if column in ("provider", "model") else "right")
    for m in report.by_model:
        hit = "-" if m.cache_hit_rate is None else f"{m.cache_hit_rate:.1%}"
        calls.add_row(
            m.provider, m.model, str(m.calls), str(m.tokens_in), str(m.tokens_out),
            str(m.cache_read_tokens), str(m.cache_write_tokens), str(m.cost_usd), hit,
        )  # fmt: skip
    calls.add_row("total", "", str(report.totals.calls), "", "", "", "",
                  str(report.totals.cost_usd), "")  # fmt: skip
    console.print(calls)
    on_claude = (
        "no price for this model"
        if report.local_calls_on_claude_usd is None
        else f"{report.local_calls_on_claude_usd} USD"
    )
    console.print(
        f"{report.local_calls} local calls would have cost {on_claude} on "
        f"{report.local_calls_on_claude_model} (standard price)."
    )
