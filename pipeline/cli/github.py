"""``patterns github recover``: ask GitHub to redeliver the webhook deliveries it failed to make
and that we never stored (:func:`pipeline.github.recover.recover`). ``patterns github verdicts``:
read the reactions and replies on our feedback comments now
(:func:`pipeline.github.verdict_poll.poll_verdicts`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer

from pipeline.cli.common import err, open_db, start
from pipeline.errors import ConfigurationError, InvalidValueError
from pipeline.settings import Settings

if TYPE_CHECKING:
    from pipeline.github.client import HttpxGitHubClient

github_app = typer.Typer(
    help="GitHub: recover missed webhook deliveries; read people's verdicts.", no_args_is_help=True
)


@contextmanager
def _client(settings: Settings) -> Iterator[HttpxGitHubClient]:
    """The REST client of ``settings``, closed afterwards; exit 2 when it is not configured."""
    from pipeline.github.client import HttpxGitHubClient

    try:
        client = HttpxGitHubClient.from_settings(settings)
    except ConfigurationError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    try:
        yield client
    finally:
        client.close()


@github_app.command("recover")
def recover(
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="How far back: a duration (90s, 30m, 12h, 3d) or an ISO date/time (UTC when "
            "naive). Default: 3d, as long as GitHub keeps deliveries.",
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report what would be redelivered; post nothing.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON line.")
    ] = False,
) -> None:
    """For each hook of PATTERNS_GITHUB_HOOKS, list its deliveries since --since, and ask GitHub
    to redeliver (once) each event that no attempt delivered and that is not in
    webhook_deliveries. Exit 1 when a hook could not be listed, a redelivery was refused or
    GitHub's rate limit stopped the run; 2 when the token or the hooks are not configured."""
    from pipeline.github.recover import parse_since
    from pipeline.github.recover import recover as run_recovery

    settings = start(json_logs=json_out)
    try:
        window = parse_since(since)
    except InvalidValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--since") from exc
    if not settings.github_hooks:
        err.print("[red]PATTERNS_GITHUB_HOOKS is not set (e.g. repo:owner/name:123).[/red]")
        raise typer.Exit(2)
    with _client(settings) as client, open_db(settings) as db:
        summary = run_recovery(
            db=db, client=client, hooks=settings.github_hooks, since=window, dry_run=dry_run
        )
    if json_out:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        verb = "would redeliver" if dry_run else "redelivery requested"
        done = summary.to_redeliver if dry_run else summary.redelivery_requested
        typer.echo(
            f"hooks {summary.hooks}, listed {summary.listed}, failed {summary.failed}, "
            f"already stored {summary.already_stored}, {verb} {done}, errors {summary.errors}"
        )
        for line in summary.messages:
            err.print(line, markup=False)
    if not summary.ok:
        raise typer.Exit(1)


@github_app.command("verdicts")
def verdicts(
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the summary as one JSON line.")
    ] = False,
) -> None:
    """Poll the reactions (👍/👎) and quoting replies on our feedback comments of the last
    PATTERNS_VERDICTS_WINDOW_DAYS and turn them into validations or contradictions of the
    patterns each comment listed (what beat runs every PATTERNS_VERDICTS_POLL_INTERVAL_S). Exit
    1 when a thread could not be read or GitHub's rate limit stopped the poll; 2 without
    PATTERNS_GITHUB_TOKEN."""
    from pipeline.github.verdict_poll import poll_verdicts

    settings = start(json_logs=json_out)
    with _client(settings) as client, open_db(settings) as db:
        summary = poll_verdicts(db, client, settings)
    if json_out:
        typer.echo(json.dumps(summary.as_dict()))
    else:
        typer.echo(
            f"threads {summary.threads}, comments {summary.comments}, added {summary.added}, "
            f"changed {summary.changed}, withdrawn {summary.withdrawn}, patterns "
            f"{summary.patterns}, errors {summary.errors}"
        )
        for line in summary.messages:
            err.print(line, markup=False)
    if summary.errors or summary.rate_limited:
        raise typer.Exit(1)
