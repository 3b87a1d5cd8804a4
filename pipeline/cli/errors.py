"""``patterns errors ...``: import TypeScript compiler errors, run a fix batch, review fixes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from pipeline.cli.common import err, open_db, start

errors_app = typer.Typer(help="TypeScript error-fix batch.", no_args_is_help=True)

JsonOut = Annotated[bool, typer.Option("--json")]


@errors_app.command("import")
def import_errors(
    paths: Annotated[list[Path], typer.Argument(help="tsc output or .jsonl records.", exists=True)],
    project: Annotated[str, typer.Option(help="Project for tsc output without one.")] = "default",
    json_out: JsonOut = False,
) -> None:
    """Store the errors of PATHS as `pending` (idempotent on project, path, line, code, message)."""
    settings = start(json_logs=True)
    from pipeline.errorfix.parsing import read_diagnostics
    from pipeline.errorfix.store import store_diagnostics

    diagnostics, malformed = read_diagnostics(paths, project)
    with open_db(settings) as db:
        created = store_diagnostics(db, diagnostics)
    for where, reason in malformed:
        err.print(f"[yellow]malformed[/yellow] {where}: {reason}")
    summary = {"read": len(diagnostics), "created": created, "malformed": len(malformed)}
    typer.echo(json.dumps(summary) if json_out else f"{created} new of {len(diagnostics)} errors")


@errors_app.command("process")
def process(
    limit: Annotated[int | None, typer.Option(min=1, help="Errors to claim.")] = None,
    json_out: JsonOut = False,
) -> None:
    """Run one batch now, in this process (the same function beat runs every 10 minutes)."""
    settings = start(json_logs=True)
    from pipeline.errorfix.batch import process_batch
    from pipeline.llm.local import local_engine
    from pipeline.store.embedder import SentenceTransformerEmbedder

    with open_db(settings) as db:
        engine = local_engine(settings)
        try:
            summary = process_batch(
                db=db, engine=engine, embedder=SentenceTransformerEmbedder.from_settings(settings),
                settings=settings, limit=limit,
            )  # fmt: skip
        finally:
            engine.close()
    for error_id, reason in sorted(summary.failures.items()):
        err.print(f"[yellow]failed[/yellow] error {error_id}: {reason}")
    line = json.dumps(summary.as_dict(), sort_keys=True)
    sys.stdout.write(line + "\n" if json_out else f"{summary.as_dict()}\n")
    sys.stdout.flush()


def _review(error_id: int, accepted: bool) -> None:
    settings = start(json_logs=True)
    from pipeline.errorfix.store import review
    from pipeline.errors import ConflictError, NotFoundError

    try:
        with open_db(settings) as db:
            status = review(db, error_id, accepted)
    except (NotFoundError, ConflictError) as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from exc
    typer.echo(f"error {error_id}: {status.value}")


@errors_app.command("accept")
def accept(error_id: int) -> None:
    """Accept the latest suggestion for ERROR_ID: it becomes a retrieval example."""
    _review(error_id, True)


@errors_app.command("reject")
def reject(error_id: int) -> None:
    """Reject the latest suggestion for ERROR_ID."""
    _review(error_id, False)


@errors_app.command("report")
def report(json_out: JsonOut = False) -> None:
    """Errors by status, the acceptance rate of reviewed suggestions, and the compile and resolve
    rates of the latest suggestions (tsc), before and after the compiler-in-the-loop retry."""
    settings = start(json_logs=True)
    from pipeline.errorfix.store import acceptance

    with open_db(settings) as db:
        result = acceptance(db).as_dict()
    if json_out:
        typer.echo(json.dumps(result, sort_keys=True))
        return

    def pct(rate: float | None) -> str:
        return "-" if rate is None else f"{100 * rate:.1f}%"

    statuses = ", ".join(f"{k} {v}" for k, v in sorted(result["by_status"].items())) or "none"
    checks = ", ".join(f"{k} {v}" for k, v in sorted(result["by_check"].items())) or "none"
    typer.echo(f"errors: {statuses}")
    typer.echo(
        f"acceptance rate {pct(result['acceptance_rate'])} "
        f"({result['accepted']} accepted, {result['rejected']} rejected)"
    )
    typer.echo(f"tsc checks of the latest suggestions: {checks}")
    first_compile, first_resolve = result["first_compile_rate"], result["first_resolve_rate"]
    typer.echo(
        f"compile rate {pct(result['compile_rate'])} (first fix {pct(first_compile)}), "
        f"resolve rate {pct(result['resolve_rate'])} (first fix {pct(first_resolve)}); "
        f"{result['checked']} checked, {result['retried']} sent back to the model"
    )
