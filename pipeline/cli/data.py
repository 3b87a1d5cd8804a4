"""Database commands: ``patterns stats``, ``patterns db upgrade`` and ``patterns apikey``."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.cli.common import err, open_db, start
from pipeline.db.engine import ALL_PROJECTS

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
apikey_app = typer.Typer(
    help="Per-project API keys for POST /v1/interactions.", no_args_is_help=True
)


def stats(
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Row counts of every table, interactions by status, LLM calls by provider and the
    response cache's hits and hit rate."""
    settings = start(json_logs=json_out)
    from pipeline.ops.stats import table_counts

    with open_db(settings) as db, db.session(ALL_PROJECTS) as session:
        counts = table_counts(session)
    if json_out:
        typer.echo(json.dumps(counts, sort_keys=True))
        return
    table = Table(title="patterns stats", show_header=False)
    for key, value in counts.items():
        table.add_row(key, json.dumps(value) if isinstance(value, dict) else str(value))
    Console().print(table)


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Migrate the database to REVISION (default: the newest)."""
    settings = start(json_logs=False)
    from pipeline.db.engine import resolve_url, upgrade

    upgrade(resolve_url(settings), revision)
    err.print(f"database at {revision}")


@apikey_app.command("create")
def apikey_create(
    project: Annotated[str, typer.Argument(help="Project name, e.g. owner/repo.")],
    name: Annotated[str, typer.Option(help="A label for the key.")] = "default",
) -> None:
    """Create an API key for PROJECT (created if new) and print it once; only its SHA-256 is
    stored."""
    settings = start(json_logs=False)
    from pipeline.errors import MalformedInputError
    from pipeline.intake.apikeys import create_api_key

    try:
        with open_db(settings) as db, db.session(ALL_PROJECTS) as session:
            key_id, key = create_api_key(session, project, name)
    except MalformedInputError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    err.print(f"API key {key_id} for {project!r} (shown once; store it now):")
    typer.echo(key)


@apikey_app.command("list")
def apikey_list(
    project: Annotated[str | None, typer.Option(help="Only this project's keys.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON array.")] = False,
) -> None:
    """List API keys (id, project, label, first characters, created, revoked); never the keys."""
    settings = start(json_logs=False)
    from pipeline.intake.apikeys import list_keys

    # Keys of every project: an operator's listing.
    with open_db(settings) as db, db.session(ALL_PROJECTS) as session:
        keys = list_keys(session, project)
    if json_out:
        typer.echo(json.dumps([k.as_json() for k in keys]))
        return
    table = Table(title="API keys")
    for column in ("id", "project", "name", "prefix", "created", "revoked"):
        table.add_column(column)
    for k in keys:
        revoked = k.revoked_at.isoformat(timespec="seconds") if k.revoked_at else ""
        table.add_row(str(k.id), k.project, k.name, k.prefix + "…",
                      k.created_at.isoformat(timespec="seconds"), revoked)  # fmt: skip
    Console().print(table)


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: Annotated[int, typer.Argument(help="The key's id (`apikey list`).")],
) -> None:
    """Revoke key KEY_ID: requests with it get 401 from now on."""
    settings = start(json_logs=False)
    from pipeline.intake.apikeys import revoke_key

    with open_db(settings) as db, db.session(ALL_PROJECTS) as session:
        done = revoke_key(session, key_id)
    if not done:
        err.print(f"[red]no active key {key_id}[/red]")
        raise typer.Exit(1)
    err.print(f"API key {key_id} revoked")
