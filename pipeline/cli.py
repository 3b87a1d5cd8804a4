"""The ``patterns`` command line (Typer).

``run`` processes files to completion; ``ingest`` only stores and enqueues them; ``worker`` serves
one role's queues; ``beat`` schedules the outbox sweep; ``serve`` runs the HTTP API; ``apikey
create`` makes a project key; ``stats`` counts rows; ``db upgrade`` migrates.
Each command builds the settings once and passes them down.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from pipeline.settings import Settings, get_settings

app = typer.Typer(
    help="pattern-pipeline: developer activity in, patterns out.", no_args_is_help=True
)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
apikey_app = typer.Typer(
    help="Per-project API keys for POST /v1/interactions.", no_args_is_help=True
)
app.add_typer(apikey_app, name="apikey")


def _add_errors_app() -> None:
    from pipeline.cli_errors import errors_app

    app.add_typer(errors_app, name="errors")


_add_errors_app()


def _add_ops_commands() -> None:
    from pipeline.cli_ops import flower

    app.command("flower")(flower)


_add_ops_commands()


def _add_costs_command() -> None:
    from pipeline.cli_costs import costs

    app.command("costs")(costs)


_add_costs_command()


def _add_report_command() -> None:
    from pipeline.cli_report import report

    app.command("report")(report)


_add_report_command()

err = Console(stderr=True)


def _configure_logging(json_logs: bool, level: str = "WARNING") -> None:
    """structlog to stderr: key-value for people, JSON for machines (see
    :func:`pipeline.logging.configure_logging`)."""
    from pipeline.logging import configure_logging

    configure_logging(json_logs=json_logs, level=level)


def _settings() -> Settings:
    settings = get_settings()
    # Models are never fetched from a hub at run time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    # pgserver asks platformdirs for a runtime folder; without XDG_RUNTIME_DIR (containers, CI)
    # platformdirs warns on every command and falls back to /tmp, which is fine.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    return settings


@app.command()
def run(
    paths: Annotated[list[Path], typer.Argument(help="JSONL or JSONL.gz files.", exists=True)],
    limit: Annotated[int | None, typer.Option(help="Read at most N records.", min=1)] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="End stdout with one JSON summary line.")
    ] = False,
    claude_batch: Annotated[
        bool,
        typer.Option(
            "--claude-batch",
            help="Send work routed to Claude through the Message Batches API (half price; "
            "results can take up to 24 h).",
        ),
    ] = False,
) -> None:
    """Ingest PATHS, extract patterns and relationships, embed them, and print a summary.

    With REDIS_URL set, work goes through Redis to `patterns worker` processes and this command
    waits for them; without it, the same tasks run in this process.
    """
    settings = _settings()
    _configure_logging(json_logs=json_out)
    from pipeline.db.engine import Database
    from pipeline.dispatch import CeleryDispatcher
    from pipeline.runner import run as run_job
    from workers import resources

    db = Database.connect(settings)
    resources.install(database=db)
    dispatcher = CeleryDispatcher()

    def warm_up() -> None:
        resources.engine()
        resources.embedder()

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        tasks: dict[str, Any] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total or None)
            bar.update(tasks[stage], completed=done, total=total or None)

        try:
            summary = run_job(
                paths,
                db=db,
                dispatcher=dispatcher,
                settings=settings,
                limit=limit,
                progress=progress,
                warm_up=warm_up if dispatcher.eager else None,
                claude_batch=claude_batch,
            )
        finally:
            resources.close()
    _print_summary(summary)
    if json_out:
        sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
        sys.stdout.flush()


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="patterns run", show_header=False)
    for key in (
        "mode", "interactions", "extracted", "failed", "skipped", "patterns", "embedded",
        "relationships", "validations", "recommendations", "analyses", "llm_calls",
        "deferred_to_local", "tokens_out", "cost_usd", "seconds",
        "model_load_seconds", "processing_seconds", "interactions_per_s", "output_tokens_per_s",
        "skipped_deliveries", "malformed",
    ):  # fmt: skip
        table.add_row(key, str(summary.get(key)))
    err.print(table)


@app.command()
def stats(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Row counts of every table, interactions by status and LLM calls by provider."""
    settings = _settings()
    _configure_logging(json_logs=json_out)
    from pipeline.db.engine import Database
    from pipeline.stats import table_counts

    db = Database.connect(settings)
    try:
        with db.session() as session:
            counts = table_counts(session)
    finally:
        db.dispose()
    if json_out:
        typer.echo(json.dumps(counts, sort_keys=True))
        return
    table = Table(title="patterns stats", show_header=False)
    for key, value in counts.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    Console().print(table)


@app.command()
def worker(
    role: Annotated[str, typer.Option(help="extract | embed | claude | errorfix | all")] = "all",
    concurrency: Annotated[int, typer.Option(min=1)] = 1,
    loglevel: Annotated[str, typer.Option()] = "INFO",
    json_logs: Annotated[
        bool, typer.Option("--json-logs/--no-json-logs", help="One JSON object per log line.")
    ] = True,
) -> None:
    """Start a Celery worker for ROLE's queues (needs REDIS_URL)."""
    settings = _settings()
    _configure_logging(json_logs=json_logs, level=loglevel.upper())
    if not settings.redis_url:
        err.print("[red]REDIS_URL is not set: a worker needs a broker.[/red]")
        raise typer.Exit(2)
    from workers.worker import run_worker

    try:
        run_worker(role, concurrency=concurrency, loglevel=loglevel)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc


@app.command()
def ingest(
    paths: Annotated[list[Path], typer.Argument(help="JSONL or JSONL.gz files.", exists=True)],
    limit: Annotated[int | None, typer.Option(help="Read at most N records.", min=1)] = None,
    json_out: Annotated[
        bool, typer.Option("--json", help="End stdout with one JSON summary line.")
    ] = False,
) -> None:
    """Store PATHS' records and publish their extract tasks, without waiting for workers.

    The producer side of `run` for the distributed mode (REDIS_URL set, `patterns worker`
    processes elsewhere). Without REDIS_URL the interactions are only stored (`received`).
    """
    import time

    settings = _settings()
    _configure_logging(json_logs=json_out)
    from pipeline.db.engine import Database
    from pipeline.db.models import InteractionStatus
    from pipeline.dispatch import CeleryDispatcher
    from pipeline.runner import ingest_paths, publish_pending
    from workers.app import make_celery

    started = time.perf_counter()
    db = Database.connect(settings)
    dispatcher = CeleryDispatcher(make_celery(settings))
    try:
        with Progress(
            TextColumn("{task.description:<9}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=err,
            disable=not err.is_terminal,
        ) as bar:
            tasks: dict[str, Any] = {}
            labels = {"ingest": "stored", "extract": "enqueued"}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bar.add_task(labels.get(stage, stage), total=None, rate="")
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.update(
                    tasks[stage], completed=done, total=total or None,
                    rate=f"{done / elapsed:,.0f}/s",
                )  # fmt: skip

            report = ingest_paths(db, paths, limit=limit, progress=progress)
            published = 0
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
    finally:
        db.dispose()
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
    table = Table(title="patterns ingest", show_header=False)
    for key, value in summary.items():
        table.add_row(key, str(value))
    err.print(table)
    if json_out:
        sys.stdout.write(json.dumps(summary, sort_keys=True) + "\n")
        sys.stdout.flush()


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the HTTP API (webhooks, interactions, /healthz; docs at /docs) under uvicorn."""
    settings = _settings()
    _configure_logging(json_logs=True, level="INFO")
    import uvicorn

    from pipeline.api import create_app

    uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)


@app.command()
def beat(
    loglevel: Annotated[str, typer.Option()] = "INFO",
) -> None:
    """Run Celery beat: the outbox sweep every minute (needs REDIS_URL). Run one per deployment.

    The schedule state lives in <data_dir>/celerybeat-schedule.
    """
    settings = _settings()
    _configure_logging(json_logs=True, level="INFO")
    if not settings.redis_url:
        err.print("[red]REDIS_URL is not set: beat needs a broker.[/red]")
        raise typer.Exit(2)
    from workers.app import app as celery_app

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.data_dir / "celerybeat-schedule"
    celery_app.start(["beat", "--schedule", str(schedule), "--loglevel", loglevel])


@apikey_app.command("create")
def apikey_create(
    project: Annotated[str, typer.Argument(help="Project name, e.g. owner/repo.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
) -> None:
    """Create an API key for PROJECT (created if new) and print it once; only its SHA-256 is
    stored."""
    settings = _settings()
    _configure_logging(json_logs=False)
    from pipeline.apikeys import create_api_key
    from pipeline.db.engine import Database
    from pipeline.errors import MalformedInputError

    db = Database.connect(settings)
    try:
        with db.session() as session:
            key_id, key = create_api_key(session, project, name)
    except MalformedInputError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    finally:
        db.dispose()
    err.print(f"API key {key_id} for {project!r} (shown once; store it now):")
    typer.echo(key)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Migrate the database to REVISION (default: the newest)."""
    settings = _settings()
    _configure_logging(json_logs=False)
    from pipeline.db.engine import resolve_url, upgrade

    upgrade(resolve_url(settings), revision)
    err.print(f"database at {revision}")


def main() -> None:
    """Console-script entry point (``patterns``)."""
    app()


if __name__ == "__main__":
    main()
