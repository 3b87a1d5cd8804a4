"""Feedback task: comment on GitHub with similar earlier patterns (after embedding)."""

from __future__ import annotations

from typing import Any

from pipeline.feedback import HttpxGitHubClient, post_feedback
from workers import resources
from workers.app import RETRY_POLICY, app


@app.task(
    name="patterns.post_feedback",
    **RETRY_POLICY,
)
def post_feedback_task(interaction_ids: list[int]) -> dict[str, Any]:
    """Post one comment per eligible delivery of the interactions (needs PATTERNS_GITHUB_TOKEN)."""
    settings = resources.settings()
    if settings.github_token is None:
        return {"posted": 0, "skipped": len(interaction_ids)}
    client = HttpxGitHubClient.from_settings(settings)
    try:
        result = post_feedback(
            db=resources.db(),
            client=client,
            settings=settings,
            interaction_ids=[int(i) for i in interaction_ids],
        )
    finally:
        client.close()
    return {"posted": len(result.posted), "skipped": len(result.skipped)}
