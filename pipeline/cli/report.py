"""``patterns report``: cost, quality and queue health over the last N UTC days
(:func:`pipeline.ops.report.build_report`), as tables, one JSON line or a PNG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import open_db, start
from pipeline.db.engine import ALL_PROJECTS
from pipeline.ops.quality import signal_lines
from pipeline.ops.report import Report


def _print(report: Report, console: Console) -> None:
    providers = sorted({p for d in report.daily for p in d.llm_calls})
    daily = Table(title=f"patterns report {report.start} to {report.end} (UTC days)")
    columns = ["day", "created", "extracted", "failed", "patterns",
               *(f"calls {p}" for p in providers), "cache hits", "cost USD",
               "Claude spent / cap"]  # fmt: skip
    for column in columns:
        daily.add_column(column, justify="left" if column == "day" else "right")
    for d in report.daily:
        daily.add_row(
            str(d.day), str(d.interactions_created), str(d.extracted), str(d.failed),
            str(d.patterns_created), *(str(d.llm_calls.get(p, 0)) for p in providers),
            str(d.cache_hits), str(d.cost_usd), f"{d.claude_spent_usd} / {d.claude_cap_usd}",
        )  # fmt: skip
    console.print(daily)
    console.print(f"total cost {report.total_cost_usd} USD")

    q = report.quality
    quality = Table(title="quality", show_header=False)
    quality.add_row("extracted", str(q.extracted))
    quality.add_row("failed", str(q.failed))
    quality.add_row("failure rate", "-" if q.failure_rate is None else f"{q.failure_rate:.1%}")
    per = "-" if q.patterns_per_extracted is None else f"{q.patterns_per_extracted:.2f}"
    quality.add_row("patterns per extracted interaction", per)
    quality.add_row("validations", str(q.validations))
    quality.add_row("relationships", str(q.relationships))
    quality.add_row("recommendations", str(q.recommendations))
    console.print(quality)
    if q.top_failure_reasons:
        reasons = Table(title="top failure reasons")
        reasons.add_column("count", justify="right")
        reasons.add_column("reason")
        for r in q.top_failure_reasons:
            reasons.add_row(str(r.count), r.reason)
        console.print(reasons)

    signals = Table(title="label-free signals (patterns created in the window)", show_header=False)
    for label, value in signal_lines(report.signals):
        signals.add_row(label, value)
    console.print(signals)
    if report.cross_checks:
        checks = Table(title="Claude cross-check (agreement per task type)")
        for column in ("task type", "samples", "agreement", "routing uses it", "alert"):
            checks.add_column(column, justify="left" if column == "task type" else "right")
        for a in report.cross_checks:
            checks.add_row(a.task_type.value, str(a.samples), f"{a.rate:.1%}",
                           "yes" if a.in_use else "no", "ALERT" if a.alert else "")  # fmt: skip
        console.print(checks)

    c = report.response_cache
    rate = "-" if c.hit_rate is None else f"{c.hit_rate:.1%}"
    console.print(f"response cache: {c.hits} hits, {c.model_calls} model calls, hit rate {rate}")

    h = report.queue
    queue = Table(title="queue health (now)", show_header=False)
    for status, n in h.by_status.items():
        queue.add_row(f"status {status}", str(n))
    age = "-" if h.oldest_queued_age_s is None else f"{h.oldest_queued_age_s:.0f}"
    queue.add_row("oldest queued age (s)", age)
    queue.add_row("dead", str(h.dead))
    queue.add_row("pending analyses", str(h.pending_analyses))
    console.print(queue)


def report(
    days: Annotated[int, typer.Option("--days", min=1, help="UTC days, today included.")] = 14,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the report as one JSON line.")
    ] = False,
    png: Annotated[
        Path | None,
        typer.Option("--png", help="Also write a chart of patterns and Claude spend per day."),
    ] = None,
) -> None:
    """Cost, quality and queue health over the last DAYS UTC days: interactions, patterns, LLM
    calls, response cache hits and dollars per day, the Claude budget, the cache's hit rate,
    failure reasons and the outbox now."""
    from pipeline.ops.report import build_report, write_chart

    settings = start(json_logs=json_out)
    with open_db(settings) as db, db.session(ALL_PROJECTS) as session:
        result = build_report(session, settings=settings, days=days)
    if json_out:
        typer.echo(result.model_dump_json())
    else:
        _print(result, Console())
    if png is not None:
        write_chart(result, png)
        Console(stderr=True).print(f"chart written to {png}")
