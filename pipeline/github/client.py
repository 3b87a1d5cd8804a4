"""GitHub's REST API, the part this project uses, over httpx with a token.

Requests carry ``Authorization: Bearer``, ``Accept: application/vnd.github+json`` and
``X-GitHub-Api-Version`` (docs.github.com, "API versions"). Network failures, 5xx, 429 and an
exhausted rate limit are :class:`~pipeline.errors.RetryableError`; any other refusal is
:class:`~pipeline.errors.PermanentError`.
"""

from __future__ import annotations

from typing import Protocol

import httpx

from pipeline.errors import ConfigurationError, PermanentError, RetryableError
from pipeline.settings import Settings

#: ``X-GitHub-Api-Version`` sent with every request (docs.github.com, "API versions").
GITHUB_API_VERSION = "2022-11-28"


class GitHubClient(Protocol):
    """The part of GitHub's REST API feedback needs."""

    def create_issue_comment(self, repo: str, number: int, body: str) -> int:
        """Comment on issue or pull request ``number`` of ``repo`` (``owner/name``); return the
        comment's id.

        Raises:
            RetryableError: network failure, 5xx, 429 or an exhausted rate limit.
            PermanentError: any other refusal (404, 401, 422...).
        """
        ...


class HttpxGitHubClient:
    """:class:`GitHubClient` over httpx, with a token (``Authorization: Bearer``)."""

    def __init__(self, base_url: str, token: str, *, timeout_s: float = 10.0) -> None:
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            timeout=timeout_s,
            headers={
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": GITHUB_API_VERSION,
                "User-Agent": "pattern-pipeline",
            },
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> HttpxGitHubClient:
        """A client for ``github_api_url`` with ``github_token``.

        Raises:
            ConfigurationError: no token is set.
        """
        if settings.github_token is None:
            raise ConfigurationError("PATTERNS_GITHUB_TOKEN is not set")
        return cls(
            settings.github_api_url,
            settings.github_token.get_secret_value(),
            timeout_s=settings.github_timeout_s,
        )

    def create_issue_comment(self, repo: str, number: int, body: str) -> int:
        """See :meth:`GitHubClient.create_issue_comment`."""
        try:
            resp = self._client.post(f"/repos/{repo}/issues/{number}/comments", json={"body": body})
        except httpx.TransportError as exc:
            raise RetryableError(f"GitHub unreachable: {exc}") from exc
        if resp.status_code in (200, 201):
            return int(resp.json()["id"])
        detail = f"GitHub answered {resp.status_code}: {resp.text[:300]}"
        exhausted = resp.status_code == 403 and resp.headers.get("x-ratelimit-remaining") == "0"
        if resp.status_code >= 500 or resp.status_code == 429 or exhausted:
            raise RetryableError(detail)
        raise PermanentError(detail)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
