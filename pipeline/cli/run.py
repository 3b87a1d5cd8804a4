"""``patterns run`` (process files to completion) and ``patterns ingest`` (store and enqueue
only), with a progress bar per stage on a terminal."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from pipeline.cli.common import err, open_db, runtime, start
from pipeline.cli.quiet import engine_output
from pipeline.db.status import InteractionStatus
from pipeline.types import Progress as ProgressFn

Paths = Annotated[list[Path], typer.Argument(help="JSONL or JSONL.gz files.", exists=True)]
Limit = Annotated[int | None, typer.Option(help="Read at most N records.", min=1)]
JsonOut = Annotated[bool, typer.Option("--json", help="End stdout with one JSON summary line.")]
Verbose = Annotated[
    bool,
    typer.Option(
        "--verbose", "-v",
        help="Show vLLM, torch and transformers output on the terminal instead of writing it "
        "to <data_dir>/logs/run-*.log.",
    ),
]  # fmt: skip

#: The rows of the summary table ``run`` prints, in order.
SUMMARY_ROWS = (
    "mode", "interactions", "extracted", "skipped_trivial", "failed", "skipped", "patterns",
    "patterns_active",
    "merged", "embedded",
    "relationships", "validations", "recommendations", "analyses", "llm_calls", "cache_hits",
    "deferred_to_local", "tokens_out", "cost_usd", "seconds", "model_load_seconds",
    "processing_seconds", "interactions_per_s", "output_tokens_per_s", "skipped_deliveries",
    "malformed",
)  # fmt: skip


@contextmanager
def progress_bars(
    labels: dict[str, str] | None = None, *, console: Console | None = None,
    redirect: bool = True,
) -> Iterator[ProgressFn]:  # fmt: skip
    """A ``progress(stage, done, total)`` callback drawing one rich bar per stage on
    ``console`` (default: stderr), with the count, the stage's rate (items per second since the
    report before its first one: stages run one after another) and the time left; nothing when
    the console is not a terminal. ``redirect``: print Python's ``sys.stdout``/``sys.stderr``
    writes above the bars (off while engine output goes to a log file, where they belong)."""
    console = console or err
    with Progress(
        TextColumn("{task.description:<9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TextColumn("eta"),
        TimeRemainingColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
        redirect_stdout=redirect,
        redirect_stderr=redirect,
    ) as bar:
        tasks: dict[str, Any] = {}
        started: dict[str, float] = {}
        last_report = time.perf_counter()

        def progress(stage: str, done: int, total: int) -> None:
            nonlocal last_report
            now = time.perf_counter()
            if stage not in tasks:
                label = (labels or {}).get(stage, stage)
                tasks[stage] = bar.add_task(label, total=total or None, rate="")
                started[stage] = last_report
            last_report = now
            elapsed = max(now - started[stage], 1e-3)
            rate = f"{done / elapsed:,.1f}/s" if done else ""
            bar.update(tasks[stage], completed=done, total=total or None, rate=rate)

        yield progress


def _print_table(title: str, rows: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for key, value in rows.items():
        table.add_row(key, str(value))
    err.print(table)


def _print_json(summary: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
    sys.stdout.flush()


def run(
    ctx: typer.Context,
    paths: Paths,
    limit: Limit = None,
    json_out: JsonOut = False,
    claude_batch: Annotated[
        bool,
        typer.Option(
            "--claude-batch",
            help="Send work routed to Claude through the Message Batches API (half price; "
            "results can take up to 24 h).",
        ),
    ] = False,
    verbose: Verbose = False,
) -> None:
    """Ingest PATHS, extract patterns and relationships, embed them, and print a summary.

    With REDIS_URL set, work goes through Redis to `patterns worker` processes and this command
    waits for them; without it, the same tasks run in this process, and the models' own output
    (vLLM, torch, transformers, and this process's log lines) goes to a log file under the data
    folder, whose path is printed first. The terminal shows a progress bar per stage (ingest,
    models, extract, embed), then the summary. --verbose keeps all output on the terminal.
    """
    settings = start(json_logs=json_out)
    from pipeline.runner import run as run_job

    rt = runtime(ctx)
    dispatcher = rt.dispatcher(settings)
    logs = settings.data_dir / "logs"
    # Distributed, this process loads no model: nothing to keep off the terminal.
    keep = verbose or not dispatcher.eager
    with (
        engine_output(logs, verbose=keep, console=err) as terminal,
        open_db(settings) as db,
        rt.in_process(settings, db) as models,
        progress_bars(console=terminal.console, redirect=not terminal.quiet) as progress,
    ):

        def warm_up() -> None:
            progress("models", 0, 2)
            models.engine()
            progress("models", 1, 2)
            models.embedder()
            progress("models", 2, 2)

        summary = run_job(
            paths, db=db, dispatcher=dispatcher, settings=settings, limit=limit,
            progress=progress, warm_up=warm_up if dispatcher.eager else None,
            claude_batch=claude_batch,
        )  # fmt: skip
    result = summary.as_dict()
    _print_table("patterns run", {key: result.get(key) for key in SUMMARY_ROWS})
    if json_out:
        _print_json(result)


def ingest(
    ctx: typer.Context, paths: Paths, limit: Limit = None, json_out: JsonOut = False
) -> None:
    """Store PATHS' records and publish their extract tasks, without waiting for workers.

    The producer side of `run` for the distributed mode (REDIS_URL set, `patterns worker`
    processes elsewhere). Without REDIS_URL the interactions are only stored (`received`).
    """
    settings = start(json_logs=json_out)
    from pipeline.intake.outbox import publish_pending
    from pipeline.intake.records import ingest_paths

    started = time.perf_counter()
    dispatcher = runtime(ctx).dispatcher(settings)
    published = 0
    labels = {"ingest": "stored", "extract": "enqueued"}
    with open_db(settings) as db, progress_bars(labels) as progress:
        report = ingest_paths(db, paths, limit=limit, progress=progress)
        if dispatcher.eager:
            err.print(
                "[yellow]REDIS_URL is not set: interactions stored as `received`, nothing "
                "enqueued (use `patterns run`, or set REDIS_URL and run workers).[/yellow]"
            )
        else:
            published = publish_pending(
                db, dispatcher, report.interaction_ids, settings.extract_batch_size, progress,
                statuses=(InteractionStatus.RECEIVED,),
            )  # fmt: skip
    summary = {
        "interactions": len(report.interaction_ids),
        "new_interactions": report.created,
        "already_stored": report.existing,
        "skipped_deliveries": report.skipped_deliveries,
        "malformed": len(report.malformed),
        "published": published,
        "mode": "stored-only" if dispatcher.eager else "distributed",
        "seconds": round(time.perf_counter() - started, 2),
    }
    _print_table("patterns ingest", summary)
    if json_out:
        _print_json(summary)
