"""GitHub's REST API, the part this project uses, over httpx with a token.

Requests carry ``Authorization: Bearer``, ``Accept: application/vnd.github+json`` and
``X-GitHub-Api-Version`` (docs.github.com, "API versions"). Network failures, 5xx, 429 and an
exhausted rate limit are :class:`~pipeline.errors.RetryableError`; any other refusal is
:class:`~pipeline.errors.PermanentError`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import structlog

from pipeline.errors import ConfigurationError, PermanentError, RetryableError
from pipeline.settings import Settings

log = structlog.get_logger(__name__)

#: ``X-GitHub-Api-Version`` sent with every request (docs.github.com, "API versions").
GITHUB_API_VERSION = "2022-11-28"
#: Comments per page when listing an issue's comments (GitHub's maximum).
COMMENTS_PER_PAGE = 100
#: Pages of comments read at most (a thread of 10,000 comments).
MAX_COMMENT_PAGES = 100


@dataclass(frozen=True)
class IssueComment:
    """One comment of an issue or pull request: its id and Markdown body."""

    id: int
    body: str


class GitHubClient(Protocol):
    """The part of GitHub's REST API feedback needs."""

    def issue_comments(self, repo: str, number: int) -> Iterator[IssueComment]:
        """The comments of issue or pull request ``number`` of ``repo`` (``owner/name``),
        oldest first, page by page as the iterator advances.

        Raises:
            RetryableError: network failure, 5xx, 429 or an exhausted rate limit.
            PermanentError: any other refusal (404, 401...).
        """
        ...

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
        resp = self._send("POST", f"/repos/{repo}/issues/{number}/comments", json={"body": body})
        return int(resp.json()["id"])

    def issue_comments(self, repo: str, number: int) -> Iterator[IssueComment]:
        """See :meth:`GitHubClient.issue_comments`: ``GET
        /repos/{repo}/issues/{number}/comments`` (docs.github.com, "List issue comments"),
        :data:`COMMENTS_PER_PAGE` a page, following the ``Link: rel="next"`` header for at most
        :data:`MAX_COMMENT_PAGES` pages, and only to the API's own host (the token goes along)."""
        url: str | None = f"/repos/{repo}/issues/{number}/comments"
        params: dict[str, int] | None = {"per_page": COMMENTS_PER_PAGE}
        for _ in range(MAX_COMMENT_PAGES):
            if url is None:
                return
            resp = self._send("GET", url, params=params)
            for item in resp.json():
                yield IssueComment(int(item["id"]), str(item.get("body") or ""))
            url, params = resp.links.get("next", {}).get("url"), None
            if url is not None and not self._same_origin(url):
                log.warning("github_next_page_elsewhere", url=url)
                return
        log.warning("github_comment_pages_capped", repo=repo, number=number)

    def _same_origin(self, url: str) -> bool:
        base, other = urlsplit(str(self._client.base_url)), urlsplit(url)
        return (other.scheme, other.netloc) == (base.scheme, base.netloc)

    def _send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request; a 2xx response, else the error of the module notes."""
        try:
            resp = self._client.request(method, url, **kwargs)
        except httpx.TransportError as exc:
            raise RetryableError(f"GitHub unreachable: {exc}") from exc
        if 200 <= resp.status_code < 300:
            return resp
        detail = f"GitHub answered {resp.status_code}: {resp.text[:300]}"
        exhausted = resp.status_code == 403 and resp.headers.get("x-ratelimit-remaining") == "0"
        if resp.status_code >= 500 or resp.status_code == 429 or exhausted:
            raise RetryableError(detail)
        raise PermanentError(detail)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()
