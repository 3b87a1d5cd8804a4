"""Long-running services: ``patterns worker``, ``beat``, ``serve`` and ``flower``."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.common import err, runtime, start
from pipeline.queues import Role


def worker(
    ctx: typer.Context,
    role: Annotated[Role, typer.Option(help="Which queues this worker consumes.")] = Role.ALL,
    concurrency: Annotated[int, typer.Option(min=1)] = 1,
    loglevel: Annotated[str, typer.Option()] = "INFO",
    json_logs: Annotated[
        bool, typer.Option("--json-logs/--no-json-logs", help="One JSON object per log line.")
    ] = True,
) -> None:
    """Start a Celery worker for ROLE's queues (needs REDIS_URL)."""
    settings = start(json_logs=json_logs, level=loglevel.upper())
    if not settings.redis_url:
        err.print("[red]REDIS_URL is not set: a worker needs a broker.[/red]")
        raise typer.Exit(2)
    runtime(ctx).run_worker(role, concurrency=concurrency, loglevel=loglevel)


def beat(ctx: typer.Context, loglevel: Annotated[str, typer.Option()] = "INFO") -> None:
    """Run Celery beat: the outbox sweep every minute, the error-fix batch every 10 minutes
    (needs REDIS_URL). Run one per deployment.

    The schedule state lives in <data_dir>/celerybeat-schedule.
    """
    settings = start(json_logs=True, level="INFO")
    if not settings.redis_url:
        err.print("[red]REDIS_URL is not set: beat needs a broker.[/red]")
        raise typer.Exit(2)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    schedule = settings.data_dir / "celerybeat-schedule"
    runtime(ctx).run_beat(settings, schedule=schedule, loglevel=loglevel)


def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Run the HTTP API (webhooks, interactions, /healthz; docs at /docs) under uvicorn."""
    settings = start(json_logs=True, level="INFO")
    import uvicorn

    from pipeline.api.app import create_app

    # Publishing in the request path does not retry: a broker failure leaves the interaction
    # `received` for the outbox sweeper, and the request still succeeds.
    dispatcher = runtime(ctx).dispatcher(settings, retry=False) if settings.redis_url else None
    uvicorn.run(create_app(settings, dispatcher=dispatcher), host=host, port=port,
                log_level=log_level)  # fmt: skip
