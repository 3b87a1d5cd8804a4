"""``patterns flower``: the Celery monitor, in process, on the pipeline's own Celery app.

Flower 2.x is a ``celery`` sub-command (entry point ``celery.commands``), so it is started with
``Celery.start(argv=["flower", ...])``: the options travel in memory, and the basic-auth password
never appears on a process command line or in the output.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from pipeline.cli.common import runtime, start
from pipeline.errors import ConfigurationError
from pipeline.settings import Settings

err = Console(stderr=True, soft_wrap=True)


def _auth_entries(settings: Settings) -> list[str]:
    """The ``user:password`` entries of ``flower_basic_auth``.

    Raises:
        ConfigurationError: a malformed entry (the message names its position, never its text).
    """
    if settings.flower_basic_auth is None:
        return []
    entries = [e.strip() for e in settings.flower_basic_auth.get_secret_value().split(",")]
    for position, entry in enumerate(entries, start=1):
        user, sep, password = entry.partition(":")
        if not (sep and user and password):
            raise ConfigurationError(f"entry {position} is not user:password")
    return entries


def flower_argv(settings: Settings, *, auth: list[str], db: Path) -> list[str]:
    """The ``celery`` argv that starts Flower for ``settings`` (holds the passwords: keep it in
    memory)."""
    argv = [
        "flower",
        f"--port={settings.flower_port}",
        f"--address={settings.flower_address}",
        f"--max_tasks={settings.flower_max_tasks}",
        f"--persistent={settings.flower_persistent}",
        f"--db={db}",
        f"--state_save_interval={settings.flower_state_save_interval_ms}",
    ]
    if auth:
        argv.append("--basic-auth=" + ",".join(auth))
    return argv


def flower(
    ctx: typer.Context,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth", help="Start without basic auth (only on a trusted, local address)."
        ),
    ] = False,
) -> None:
    """Run Flower (the Celery monitor) against REDIS_URL, behind basic auth from
    PATTERNS_FLOWER_BASIC_AUTH / FLOWER_BASIC_AUTH (user:password, comma-separated).

    Task history persists in PATTERNS_FLOWER_DB (default data_dir/flower.db) across restarts.
    GET /healthcheck answers without auth (for probes).
    """
    settings = start(json_logs=True, level="INFO")
    if not settings.redis_url:
        err.print("[red]REDIS_URL is not set: Flower needs the broker the workers use.[/red]")
        raise typer.Exit(2)
    try:
        auth = _auth_entries(settings)
    except ConfigurationError as exc:
        err.print(f"[red]PATTERNS_FLOWER_BASIC_AUTH is malformed: {exc}.[/red]")
        raise typer.Exit(2) from None
    if not auth and not no_auth:
        err.print(
            "[red]Flower needs basic auth: set PATTERNS_FLOWER_BASIC_AUTH (or FLOWER_BASIC_AUTH) "
            "to user:password, or pass --no-auth explicitly.[/red]"
        )
        raise typer.Exit(2)
    db = settings.flower_db or settings.data_dir / "flower.db"
    db.parent.mkdir(parents=True, exist_ok=True)

    err.print(
        f"Flower on http://{settings.flower_address}:{settings.flower_port} "
        f"({f'{len(auth)} basic-auth user(s)' if auth else 'no auth'}; state in {db})"
    )
    code = runtime(ctx).run_flower(settings, flower_argv(settings, auth=auth, db=db))
    if code:
        raise typer.Exit(code)
