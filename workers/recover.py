"""Missed-delivery recovery task (beat, hourly by default; rides the sweep's queue): ask GitHub
to redeliver the webhook deliveries it failed to make and that we never stored
(:func:`pipeline.github.recover.recover`)."""

from __future__ import annotations

from typing import Any

from pipeline.github.client import HttpxGitHubClient
from pipeline.github.recover import parse_since, recover
from pipeline.queues import TaskName
from workers import resources
from workers.app import app


@app.task(name=TaskName.GITHUB_RECOVER.value, ignore_result=True)
def github_recover_task(since: str | None = None) -> dict[str, Any]:
    """One recovery run over ``PATTERNS_GITHUB_HOOKS`` since ``since`` (a duration or ISO
    date/time; default 3 days) and return its summary. Without a token or hooks it does nothing.
    A rate limit ends the run early (the next scheduled run goes on), so it is not retried."""
    res = resources.current()
    settings = res.settings
    if settings.github_token is None or not settings.github_hooks:
        return {"skipped": "PATTERNS_GITHUB_TOKEN or PATTERNS_GITHUB_HOOKS is not set"}
    client = HttpxGitHubClient.from_settings(settings)
    try:
        summary = recover(
            db=res.db(), client=client, hooks=settings.github_hooks, since=parse_since(since)
        )
    finally:
        client.close()
    return summary.as_dict()
