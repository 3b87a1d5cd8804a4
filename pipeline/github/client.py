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
    """One comment of an issue or pull request: its id and Markdown body, and (as the listing
    gives them) its author's ``login`` and account ``user_type`` (``User``, ``Bot``...) and when
    it was created (UTC; ``None`` when GitHub did not say)."""

    id: int
    body: str
    login: str = ""
    user_type: str = ""
    created_at: dt.datetime | None = None

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> IssueComment:
        """From one item of GitHub's listing.

        Raises:
            KeyError, ValueError: ``id`` is missing or malformed.
        """
        user = item.get("user") or {}
        return cls(
            id=int(item["id"]),
            body=str(item.get("body") or ""),
            login=str(user.get("login") or ""),
            user_type=str(user.get("type") or ""),
            created_at=_when(item.get("created_at")),
        )


@dataclass(frozen=True)
class Reaction:
    """One reaction on a comment: its id, ``content`` (``+1``, ``-1``, ``laugh``, ``confused``,
    ``heart``, ``hooray``, ``rocket``, ``eyes``) and its author's ``login`` and ``user_type``."""

    id: int
    content: str
    login: str
    user_type: str = ""

    @classmethod
    def from_json(cls, item: dict[str, Any]) -> Reaction:
        """From one item of GitHub's listing.

        Raises:
            KeyError, ValueError: ``id`` is missing or malformed.
        """
        user = item.get("user") or {}
        return cls(
            id=int(item["id"]),
            content=str(item.get("content") or ""),
            login=str(user.get("login") or ""),
            user_type=str(user.get("type") or ""),
        )


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

    def issue_comments(
        self, repo: str, number: int, *, since: dt.datetime | None = None
    ) -> Iterator[IssueComment]:
        """See :meth:`GitHubClient.issue_comments`: ``GET
        /repos/{repo}/issues/{number}/comments`` (docs.github.com, "List issue comments"),
        :data:`COMMENTS_PER_PAGE` a page, following the ``Link: rel="next"`` header for at most
        :data:`MAX_COMMENT_PAGES` pages, and only to the API's own host (the token goes along).
        With ``since`` (aware), only comments updated at or after it (GitHub's ``since``)."""
        params: dict[str, str | int] = {"per_page": COMMENTS_PER_PAGE}
        if since is not None:
            params["since"] = since.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        path = f"/repos/{repo}/issues/{number}/comments"
        for item in self._pages(path, params, MAX_COMMENT_PAGES):
            yield IssueComment.from_json(item)

    def comment_reactions(self, repo: str, comment_id: int) -> Iterator[Reaction]:
        """The reactions on issue comment ``comment_id`` of ``repo`` (docs.github.com, "List
        reactions for an issue comment": ``GET /repos/{repo}/issues/comments/{id}/reactions``),
        :data:`COMMENTS_PER_PAGE` a page, following ``Link: rel="next"`` on the API's own host
        for at most :data:`MAX_COMMENT_PAGES` pages.

        Raises:
            RateLimitedError: GitHub's rate limit.
            RetryableError: network failure or 5xx.
            PermanentError: any other refusal (404: the comment was deleted).
        """
        path = f"/repos/{repo}/issues/comments/{int(comment_id)}/reactions"
        for item in self._pages(path, {"per_page": COMMENTS_PER_PAGE}, MAX_COMMENT_PAGES):
            yield Reaction.from_json(item)

    def _pages(
        self, path: str, params: dict[str, str | int], max_pages: int
    ) -> Iterator[dict[str, Any]]:
        """The items of a paginated listing, page by page: ``Link: rel="next"`` is followed for
        at most ``max_pages`` pages, and only to the API's own host (the token goes along)."""
        url: str | None = path
        query: dict[str, str | int] | None = params
        for _ in range(max_pages):
            if url is None:
                return
            resp = self._send("GET", url, params=query)
            yield from resp.json()
            url, query = resp.links.get("next", {}).get("url"), None
            if url is not None and not self._same_origin(url):
                log.warning("github_next_page_elsewhere", url=url)
                return
        log.warning("github_pages_capped", path=path)

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


def _when(value: object) -> dt.datetime | None:
    """An ISO 8601 time from GitHub as an aware UTC datetime; ``None`` when absent or
    malformed."""
    if not isinstance(value, str):
        return None
    try:
        when = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


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
