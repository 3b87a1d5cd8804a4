"""Recover webhook deliveries GitHub failed to make: GitHub keeps a hook's deliveries for 3 days
but never redelivers a failed one by itself, so ``patterns github recover`` (and beat, hourly)
lists the configured hooks' deliveries, picks the events that no attempt delivered (no 2xx) and
that we have not stored either (no ``webhook_deliveries.delivery_id`` = their ``guid``), and asks
GitHub to redeliver each once per run.

:func:`missed` is the decision on plain values; :func:`recover` does the I/O (GitHub through a
:class:`DeliveriesClient`, the database under :data:`~pipeline.db.engine.ALL_PROJECTS`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Collection, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import structlog
from sqlalchemy import select

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import WebhookDelivery
from pipeline.errors import InvalidValueError, PipelineError
from pipeline.github.client import HookDelivery, RateLimitedError
from pipeline.settings_github import HookRef

log = structlog.get_logger(__name__)

#: How far back a run looks by default: GitHub redelivers deliveries of the past 3 days
#: (docs.github.com, "Redelivering webhooks").
DEFAULT_SINCE = dt.timedelta(days=3)
#: Guids looked up in the database per query.
_LOOKUP_CHUNK = 500
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


class DeliveriesClient(Protocol):
    """The part of GitHub's REST API recovery needs (:class:`~.client.HttpxGitHubClient`)."""

    def hook_deliveries(
        self, hook: HookRef, *, since: dt.datetime | None = None
    ) -> Iterator[HookDelivery]:
        """``hook``'s delivery attempts since ``since``, newest first."""
        ...

    def redeliver(self, hook: HookRef, delivery_id: int) -> None:
        """Ask GitHub to redeliver attempt ``delivery_id`` of ``hook``."""
        ...


def delivered(attempt: HookDelivery) -> bool:
    """Whether the receiver accepted ``attempt`` (a 2xx status)."""
    return 200 <= attempt.status_code < 300


def failed_guids(deliveries: Iterable[HookDelivery]) -> set[str]:
    """The guids (events) of which no attempt in ``deliveries`` was delivered."""
    seen: set[str] = set()
    ok: set[str] = set()
    for attempt in deliveries:
        seen.add(attempt.guid)
        if delivered(attempt):
            ok.add(attempt.guid)
    return seen - ok


def missed(deliveries: Iterable[HookDelivery], stored_guids: Collection[str]) -> list[HookDelivery]:
    """The attempts to redeliver: for each guid with no delivered attempt and not in
    ``stored_guids``, its most recent attempt (latest ``delivered_at``, then highest ``id``);
    oldest event first. Pure."""
    attempts = list(deliveries)
    failed = failed_guids(attempts)
    latest: dict[str, HookDelivery] = {}
    for attempt in attempts:
        if attempt.guid not in failed or attempt.guid in stored_guids:
            continue
        best = latest.get(attempt.guid)
        if best is None or (attempt.delivered_at, attempt.id) > (best.delivered_at, best.id):
            latest[attempt.guid] = attempt
    return sorted(latest.values(), key=lambda a: (a.delivered_at, a.id))


def parse_since(value: str | None, *, now: dt.datetime | None = None) -> dt.datetime:
    """The start of the window for ``--since``: a duration back from ``now`` (``90s``, ``30m``,
    ``12h``, ``3d``), an ISO 8601 date or time (naive means UTC), or ``None`` for
    :data:`DEFAULT_SINCE`. Returns an aware UTC datetime.

    Raises:
        InvalidValueError: neither a duration nor an ISO date/time.
    """
    now = now or dt.datetime.now(dt.UTC)
    if value is None:
        return now - DEFAULT_SINCE
    match = _DURATION.match(value)
    if match:
        return now - dt.timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidValueError(
            f"not a duration (90s, 30m, 12h, 3d) or ISO date/time: {value!r}"
        ) from exc
    return (when if when.tzinfo else when.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)


def stored_guids(db: Database, guids: Collection[str]) -> set[str]:
    """Which of ``guids`` we stored as ``webhook_deliveries.delivery_id`` (every project).

    Raises:
        DatabaseUnavailableError: Postgres could not be reached.
    """
    found: set[str] = set()
    ordered = sorted(guids)
    for start in range(0, len(ordered), _LOOKUP_CHUNK):
        chunk = ordered[start : start + _LOOKUP_CHUNK]
        with db.session(ALL_PROJECTS) as session:
            rows = session.scalars(
                select(WebhookDelivery.delivery_id).where(WebhookDelivery.delivery_id.in_(chunk))
            )
            found.update(rows)
    return found


@dataclass
class RecoverySummary:
    """What a run did. Counts: ``listed`` attempts within the window, ``failed`` events (guids)
    no attempt delivered, ``already_stored`` of those that we stored anyway, ``to_redeliver`` the
    rest, ``redelivery_requested`` redeliveries GitHub accepted (0 with ``dry_run``), ``errors``
    hooks that could not be listed plus redeliveries refused. ``rate_limited``: GitHub's rate
    limit stopped the run (``retry_after_s`` seconds to wait, when GitHub said); ``messages``:
    one line per error."""

    since: str
    hooks: int = 0
    listed: int = 0
    failed: int = 0
    already_stored: int = 0
    to_redeliver: int = 0
    redelivery_requested: int = 0
    errors: int = 0
    dry_run: bool = False
    rate_limited: bool = False
    retry_after_s: float | None = None
    messages: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether the run finished without errors or a rate limit."""
        return not self.errors and not self.rate_limited

    def as_dict(self) -> dict[str, Any]:
        """The summary as JSON-ready values."""
        return asdict(self)


def recover(
    *,
    db: Database,
    client: DeliveriesClient,
    hooks: Iterable[HookRef],
    since: dt.datetime,
    dry_run: bool = False,
) -> RecoverySummary:
    """Ask GitHub to redeliver, once each, the events of ``hooks`` since ``since`` (aware) that
    no attempt delivered and that we have not stored (:func:`missed`). A hook that cannot be
    listed, or a refused redelivery, counts as an error and the run goes on; a rate limit stops
    the run. With ``dry_run``, nothing is posted.

    Raises:
        DatabaseUnavailableError: Postgres could not be reached.
    """
    summary = RecoverySummary(since=since.isoformat(), dry_run=dry_run)
    requested: set[str] = set()
    for hook in hooks:
        summary.hooks += 1
        try:
            _recover_hook(db, client, hook, since, summary, requested)
        except RateLimitedError as exc:
            summary.rate_limited, summary.retry_after_s = True, exc.retry_after_s
            wait = "" if exc.retry_after_s is None else f"; retry after {exc.retry_after_s:.0f} s"
            summary.messages.append(f"{hook}: GitHub rate limit, run stopped{wait}")
            log.warning(
                "github_recover_rate_limited", hook=str(hook), retry_after_s=exc.retry_after_s
            )
            break
    log.info("github_recover_done", **summary.as_dict())
    return summary


def _recover_hook(
    db: Database,
    client: DeliveriesClient,
    hook: HookRef,
    since: dt.datetime,
    summary: RecoverySummary,
    requested: set[str],
) -> None:
    """One hook's part of :func:`recover`; raises :class:`RateLimitedError` to stop the run."""
    try:
        attempts = list(client.hook_deliveries(hook, since=since))
    except RateLimitedError:
        raise
    except (PipelineError, KeyError, ValueError, TypeError) as exc:
        summary.errors += 1
        summary.messages.append(f"{hook}: listing failed: {exc}")
        log.warning("github_recover_list_failed", hook=str(hook), error=str(exc))
        return
    failed = failed_guids(attempts)
    stored = stored_guids(db, failed)
    picks = [a for a in missed(attempts, stored) if a.guid not in requested]
    summary.listed += len(attempts)
    summary.failed += len(failed)
    summary.already_stored += len(stored)
    summary.to_redeliver += len(picks)
    for attempt in picks:
        requested.add(attempt.guid)
        if summary.dry_run:
            log.info("github_recover_would_redeliver", hook=str(hook), guid=attempt.guid)
            continue
        try:
            client.redeliver(hook, attempt.id)
        except RateLimitedError:
            raise
        except PipelineError as exc:
            summary.errors += 1
            summary.messages.append(f"{hook}: redelivery of {attempt.guid} failed: {exc}")
            log.warning("github_recover_redeliver_failed", guid=attempt.guid, error=str(exc))
            continue
        summary.redelivery_requested += 1
        log.info("github_recover_redelivered", hook=str(hook), guid=attempt.guid)
