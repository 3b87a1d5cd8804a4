"""Feedback task (``embed`` queue): comment on GitHub with similar earlier patterns (after
embedding)."""

from __future__ import annotations

from typing import Any

from pipeline.github.client import HttpxGitHubClient
from pipeline.github.feedback import post_feedback
from pipeline.queues import TaskName
from workers import resources
from workers.app import RETRY_POLICY, app


@app.task(name=TaskName.FEEDBACK.value, **RETRY_POLICY)
def post_feedback_task(interaction_ids: list[int]) -> dict[str, Any]:
    """Post one comment per eligible delivery of the interactions (needs PATTERNS_GITHUB_TOKEN)."""
    res = resources.current()
    if res.settings.github_token is None:
        return {"posted": 0, "skipped": len(interaction_ids)}
    client = HttpxGitHubClient.from_settings(res.settings)
    try:
        result = post_feedback(
            db=res.db(),
            client=client,
            settings=res.settings,
            interaction_ids=[int(i) for i in interaction_ids],
        )
    finally:
        client.close()
    return {"posted": len(result.posted), "skipped": len(result.skipped)}
