"""People's-verdicts task (beat, every ``PATTERNS_VERDICTS_POLL_INTERVAL_S``; rides the sweep's
queue): read the reactions and quoting replies on our GitHub feedback comments and turn them into
validations or contradictions (:func:`pipeline.github.verdict_poll.poll_verdicts`)."""

from __future__ import annotations

from typing import Any

from pipeline.github.client import HttpxGitHubClient
from pipeline.github.verdict_poll import poll_verdicts
from pipeline.queues import TaskName
from workers import resources
from workers.app import app


@app.task(name=TaskName.GITHUB_VERDICTS.value, ignore_result=True)
def github_verdicts_task() -> dict[str, Any]:
    """One poll; returns its summary. Without a token it does nothing. Not retried: a thread
    GitHub refused, or a rate limit, is read again by the next scheduled poll (a thread is
    reconciled in one transaction, so a poll that stops half-way leaves nothing half-done)."""
    res = resources.current()
    if res.settings.github_token is None:
        return {"skipped": "PATTERNS_GITHUB_TOKEN is not set"}
    client = HttpxGitHubClient.from_settings(res.settings)
    try:
        summary = poll_verdicts(res.db(), client, res.settings)
    finally:
        client.close()
    return summary.as_dict()
