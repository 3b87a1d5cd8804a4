"""``patterns errors ...``: import TypeScript compiler errors, run a fix batch, review fixes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

errors_app = typer.Typer(help="TypeScript error-fix batch.", no_args_is_help=True)
err = Console(stderr=True)


def _db():  # type: ignore[no-untyped-def]
    from pipeline.cli import _configure_logging, _settings
    from pipeline.db.engine import Database

    settings = _settings()
    _configure_logging(json_logs=True)
    return settings, Database.connect(settings)


@errors_app.command("import")
def import_errors(
    paths: Annotated[list[Path], typer.Argument(help="tsc output or .jsonl records.", exists=True)],
    project: Annotated[str, typer.Option(help="Project for tsc output without one.")] = "default",
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Store the errors of PATHS as `pending` (idempotent on project, path, line, code, message)."""
    from pipeline.errorfix import read_diagnostics, store_diagnostics

    _, db = _db()
    try:
        diagnostics, malformed = read_diagnostics(paths, project)
        created = store_diagnostics(db, diagnostics)
    finally:
        db.dispose()
    for where, reason in malformed:
        err.print(f"[yellow]malformed[/yellow] {where}: {reason}")
    summary = {"read": len(diagnostics), "created": created, "malformed": len(malformed)}
    typer.echo(json.dumps(summary) if json_out else f"{created} new of {len(diagnostics)} errors")


@errors_app.command("process")
def process(
    limit: Annotated[int | None, typer.Option(min=1, help="Errors to claim.")] = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Run one batch now, in this process (the same function beat runs every 10 minutes)."""
    from pipeline.errorfix import process_batch
    from workers import resources

    settings, db = _db()
    resources.install(database=db)
    try:
        summary = process_batch(
            db=db, engine=resources.engine(), embedder=resources.embedder(),
            settings=settings, limit=limit,
        )  # fmt: skip
    finally:
        resources.close()
    for error_id, reason in sorted(summary.failures.items()):
        err.print(f"[yellow]failed[/yellow] error {error_id}: {reason}")
    line = json.dumps(summary.as_dict(), sort_keys=True)
    sys.stdout.write(line + "\n" if json_out else f"{summary.as_dict()}\n")
    sys.stdout.flush()


def _review(error_id: int, accepted: bool) -> None:
    from pipeline.errorfix import review
    from pipeline.errors import MalformedInputError

    _, db = _db()
    try:
        review(db, error_id, accepted)
    except MalformedInputError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    finally:
        db.dispose()
    typer.echo(f"error {error_id}: {'accepted' if accepted else 'rejected'}")


@errors_app.command("accept")
def accept(error_id: int) -> None:
    """Accept the latest suggestion for ERROR_ID: it becomes a retrieval example."""
    _review(error_id, True)


@errors_app.command("reject")
def reject(error_id: int) -> None:
    """Reject the latest suggestion for ERROR_ID."""
    _review(error_id, False)


@errors_app.command("report")
def report(json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Errors by status and the acceptance rate of reviewed suggestions."""
    from pipeline.errorfix import acceptance

    _, db = _db()
    try:
        result = acceptance(db)
    finally:
        db.dispose()
    typer.echo(json.dumps(result, sort_keys=True) if json_out else str(result))
