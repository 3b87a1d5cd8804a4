"""GitHub's REST API, the part this project uses, over httpx with a token.

Requests carry ``Authorization: Bearer``, ``Accept: application/vnd.github+json`` and
``X-GitHub-Api-Version`` (docs.github.com, "API versions"). Network failures and 5xx are
:class:`~pipeline.errors.RetryableError`; a rate limit (429, or 403 with ``retry-after`` or an
exhausted ``x-ratelimit-remaining``) is :class:`RateLimitedError`, a retryable error that says
how long to wait; any other refusal is :class:`~pipeline.errors.PermanentError`.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import structlog

from pipeline.errors import ConfigurationError, PermanentError, RetryableError
from pipeline.settings import Settings
from pipeline.settings_github import HookRef

log = structlog.get_logger(__name__)

#: ``X-GitHub-Api-Version`` sent with every request (docs.github.com, "API versions").
GITHUB_API_VERSION = "2022-11-28"
#: Comments per page when listing an issue's comments (GitHub's maximum).
COMMENTS_PER_PAGE = 100
#: Pages of comments read at most (a thread of 10,000 comments).
MAX_COMMENT_PAGES = 100
#: Deliveries per page when listing a hook's deliveries (GitHub's maximum).
DELIVERIES_PER_PAGE = 100
#: Pages of deliveries read at most per hook and run (10,000 deliveries).
MAX_DELIVERY_PAGES = 100


class RateLimitedError(RetryableError):
    """GitHub refused for its rate limit (429, or 403 with ``retry-after`` or an exhausted
    ``x-ratelimit-remaining``). ``retry_after_s``: seconds to wait (from ``retry-after``, else
    ``x-ratelimit-reset``), ``None`` when GitHub did not say."""

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class HookDelivery:
    """One attempt of a webhook delivery as GitHub lists it: its ``id`` (what a redelivery
    names), ``guid`` (the ``X-GitHub-Delivery`` header, shared by the redeliveries of one
    event), when it was sent (UTC), whether it was a redelivery, and the receiver's HTTP status
    (``status_code``; 0 when nothing answered)."""

    id: int
    guid: str
    delivered_at: dt.datetime
    redelivery: bool
    status_code: int
    status: str = ""
    event: str = ""
    action: str | None = None

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> HookDelivery:
        """From one item of GitHub's listing.

        Raises:
            KeyError, ValueError: a required field is missing or malformed.
        """
        when = dt.datetime.fromisoformat(str(item["delivered_at"]).replace("Z", "+00:00"))
        return cls(
            id=int(item["id"]),
            guid=str(item["guid"]),
            delivered_at=when if when.tzinfo else when.replace(tzinfo=dt.UTC),
            redelivery=bool(item.get("redelivery")),
            status_code=int(item.get("status_code") or 0),
            status=str(item.get("status") or ""),
            event=str(item.get("event") or ""),
            action=item.get("action"),
        )


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

    def hook_deliveries(
        self, hook: HookRef, *, since: dt.datetime | None = None
    ) -> Iterator[HookDelivery]:
        """The delivery attempts of ``hook``, newest first as GitHub lists them (docs.github.com,
        "List deliveries for a repository webhook", and the organisation and app variants):
        :data:`DELIVERIES_PER_PAGE` a page, following ``Link: rel="next"`` (its ``cursor``) for
        at most :data:`MAX_DELIVERY_PAGES` pages and only to the API's own host (the token goes
        along). With ``since`` (aware), attempts older than it are skipped and the listing stops
        after a page that holds none newer.

        Raises:
            RateLimitedError: GitHub's rate limit (stop; retry after ``retry_after_s``).
            RetryableError: network failure or 5xx.
            PermanentError: any other refusal (404: no such hook; 401/403: the token may not).
        """
        url: str | None = hook.deliveries_path
        params: dict[str, int] | None = {"per_page": DELIVERIES_PER_PAGE}
        for _ in range(MAX_DELIVERY_PAGES):
            if url is None:
                return
            resp = self._send("GET", url, params=params)
            page = [HookDelivery.from_json(item) for item in resp.json()]
            recent = [d for d in page if since is None or d.delivered_at >= since]
            yield from recent
            if not recent:
                return
            url, params = resp.links.get("next", {}).get("url"), None
            if url is not None and not self._same_origin(url):
                log.warning("github_next_page_elsewhere", url=url)
                return
        log.warning("github_delivery_pages_capped", hook=str(hook))

    def redeliver(self, hook: HookRef, delivery_id: int) -> None:
        """Ask GitHub to send delivery ``delivery_id`` of ``hook`` again (docs.github.com,
        "Redeliver a delivery for a repository webhook" and variants: ``POST
        {deliveries}/{delivery_id}/attempts``, 202 when accepted).

        Raises:
            RateLimitedError, RetryableError, PermanentError: as :meth:`hook_deliveries`.
        """
        self._send("POST", f"{hook.deliveries_path}/{int(delivery_id)}/attempts")

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
        limited = resp.status_code == 429 or (
            resp.status_code == 403
            and ("retry-after" in resp.headers or resp.headers.get("x-ratelimit-remaining") == "0")
        )
        if limited:
            raise RateLimitedError(detail, _retry_after_s(resp.headers))
        if resp.status_code >= 500:
            raise RetryableError(detail)
        raise PermanentError(detail)

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()


def _retry_after_s(headers: httpx.Headers) -> float | None:
    """Seconds to wait from ``retry-after`` (seconds), else ``x-ratelimit-reset`` (epoch
    seconds); ``None`` when neither is there or parses."""
    try:
        if "retry-after" in headers:
            return max(0.0, float(headers["retry-after"]))
        if "x-ratelimit-reset" in headers:
            return max(0.0, float(headers["x-ratelimit-reset"]) - time.time())
    except ValueError:
        return None
    return None
