"""Normalising input: GitHub deliveries and plain interaction objects become
:class:`NormalizedInteraction` values (or :class:`SkippedDelivery` when there is nothing to learn).

Everything here is pure: no I/O, tested with plain values. Storing is
:func:`pipeline.intake.store.store`; reading files is :mod:`pipeline.intake.records`. What is
built here is storable whatever the input (:mod:`pipeline.intake.jsonsafe`, lenient): text
fields have U+0000 and lone surrogates replaced by U+FFFD, metadata numbers that no 64-bit
integer or finite float holds become strings, and a repository id outside ``bigint`` is dropped.

A delivery line looks like ``{"event": "pull_request", "delivery": "<uuid>", "payload": {...},
"files": [...]}`` (``files`` optional, as in ``../shared/data/github/``). An interaction object
looks like ``{"project": "owner/repo", "content": "...", "kind": "conversation",
"idempotency_key": "...", "author": "...", "metadata": {...}}`` (only ``project`` and ``content``
required).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.errors import MalformedInputError
from pipeline.intake.jsonsafe import INT64_MAX, INT64_MIN, safe_text, sanitize_json

#: Actions whose content is worth learning from, per event. Others are acknowledged and skipped.
PROCESSED_ACTIONS: dict[str, frozenset[str]] = {
    "pull_request": frozenset({"opened", "edited", "reopened", "closed", "ready_for_review"}),
    "issues": frozenset({"opened", "edited", "reopened", "closed"}),
    "issue_comment": frozenset({"created", "edited"}),
}

MAX_FILES_LISTED = 30
#: Longest repository full name and login kept. GitHub's are at most 39 + 1 + 100 and 39
#: characters; the bound keeps them within a btree index entry (2,704 bytes) as names and keys.
MAX_NAME_CHARS = 256

_HTML_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_TRAILER = re.compile(
    r"^\s*(signed-off-by|co-authored-by|reviewed-by|acked-by|tested-by):.*$", re.I | re.M
)
_BLANK_RUNS = re.compile(r"\n{3,}")


def _make_storable(obj: Any) -> None:
    """Clean a frozen dataclass's fields in place (``__post_init__``): text by
    :func:`~pipeline.intake.jsonsafe.safe_text` (a text field holding another type becomes
    ``None``, or its string form when required), ``metadata`` by lenient
    :func:`~pipeline.intake.jsonsafe.sanitize_json`."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, str):
            cleaned: Any = safe_text(value)
        elif f.type in ("str", "str | None") and value is not None:
            cleaned = safe_text(str(value)) if f.type == "str" else None
        elif f.name == "metadata" and isinstance(value, dict):
            cleaned = sanitize_json(value, strict=False)
        else:
            continue
        if cleaned is not value:
            object.__setattr__(obj, f.name, cleaned)


@dataclass(frozen=True)
class NormalizedInteraction:
    """An interaction ready to store. ``idempotency_key`` decides whether it is new.

    Built storable: text fields and ``metadata`` are cleaned on construction (module docstring).
    """

    project: str
    source: str
    kind: str
    content: str
    idempotency_key: str
    github_repo_id: int | None = None
    external_id: str | None = None
    author: str | None = None
    occurred_at: dt.datetime | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    delivery_id: str | None = None
    event: str | None = None
    action: str | None = None

    def __post_init__(self) -> None:
        _make_storable(self)

    @property
    def content_hash(self) -> str:
        """SHA-256 hex of the content."""
        return hashlib.sha256(self.content.encode()).hexdigest()


@dataclass(frozen=True)
class SkippedDelivery:
    """A delivery that was understood but carries nothing to extract (``ping``, ``labeled``...)."""

    delivery_id: str
    event: str
    action: str | None
    reason: str
    project: str | None = None
    github_repo_id: int | None = None

    def __post_init__(self) -> None:
        _make_storable(self)


Normalized = NormalizedInteraction | SkippedDelivery


def clean_text(body: object) -> str:
    """Strip what a model should not read from a GitHub body.

    Removes HTML comments (pull-request templates hide instructions in them), commit trailers
    (``Signed-off-by:``, ``Co-authored-by:``...), carriage returns and runs of blank lines.
    """
    if not isinstance(body, str) or not body:
        return ""
    body = body.replace("\r\n", "\n").replace("\r", "\n")
    body = _HTML_COMMENT.sub("", body)
    body = _TRAILER.sub("", body)
    return _BLANK_RUNS.sub("\n\n", body).strip()


def _parse_time(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _repository(payload: dict[str, Any]) -> tuple[str, int | None]:
    repo = payload.get("repository")
    if not isinstance(repo, dict) or not isinstance(repo.get("full_name"), str):
        raise MalformedInputError("payload has no repository.full_name")
    if len(repo["full_name"]) > MAX_NAME_CHARS:
        raise MalformedInputError(f"repository.full_name longer than {MAX_NAME_CHARS} characters")
    repo_id = repo.get("id")
    if isinstance(repo_id, bool) or not isinstance(repo_id, int):
        return repo["full_name"], None
    return repo["full_name"], repo_id if INT64_MIN <= repo_id <= INT64_MAX else None


def _text(value: object) -> str | None:
    """A string field of a payload, or ``None`` when it is anything else (a list would reach the
    database as an array)."""
    return value if isinstance(value, str) else None


def _login(obj: Any) -> str | None:
    if isinstance(obj, dict) and isinstance(obj.get("user"), dict):
        login = obj["user"].get("login")
        return login if isinstance(login, str) and len(login) <= MAX_NAME_CHARS else None
    return None


def _count(value: object) -> int:
    """A non-negative line count from a JSON value; anything else counts as 0."""
    return value if isinstance(value, int) and value >= 0 else 0


def _files_block(files: Sequence[dict[str, Any]] | None) -> tuple[str, list[dict[str, Any]]]:
    if not files:
        return "", []
    kept = [
        {
            "filename": str(f["filename"]),
            "additions": _count(f.get("additions")),
            "deletions": _count(f.get("deletions")),
        }
        for f in files
        if isinstance(f, dict) and isinstance(f.get("filename"), str) and f["filename"]
    ]
    lines = [f"- {f['filename']} (+{f['additions']}/-{f['deletions']})" for f in kept]
    if len(lines) > MAX_FILES_LISTED:
        lines = [*lines[:MAX_FILES_LISTED], f"- ... and {len(lines) - MAX_FILES_LISTED} more"]
    return f"Files changed ({len(kept)}):\n" + "\n".join(lines), kept


def normalize_delivery(
    event: str,
    delivery_id: str,
    payload: dict[str, Any],
    files: Sequence[dict[str, Any]] | None = None,
) -> Normalized:
    """Turn one GitHub webhook delivery into an interaction, or say why it is skipped.

    Args:
        event: the ``X-GitHub-Event`` header (``pull_request``, ``issues``, ``issue_comment``...).
        delivery_id: the ``X-GitHub-Delivery`` header; becomes idempotency key ``github:<id>``.
        payload: the parsed JSON body.
        files: optional list of ``{"filename", "additions", "deletions"}`` of a pull request.

    Raises:
        MalformedInputError: an event we process lacks the fields it must have.
    """
    if not isinstance(payload, dict):
        raise MalformedInputError("payload is not a JSON object")
    if not delivery_id:
        raise MalformedInputError("missing delivery id")
    action = payload.get("action") if isinstance(payload.get("action"), str) else None
    if event == "ping":
        return SkippedDelivery(delivery_id, event, action, "ping")
    if event not in PROCESSED_ACTIONS:
        return SkippedDelivery(delivery_id, event, action, f"event {event!r} not processed")
    project, repo_id = _repository(payload)
    if action not in PROCESSED_ACTIONS[event]:
        return SkippedDelivery(
            delivery_id, event, action, f"action {action!r} of {event} not processed",
            project, repo_id,
        )  # fmt: skip
    common: dict[str, Any] = dict(
        project=project,
        github_repo_id=repo_id,
        source="github",
        idempotency_key=f"github:{delivery_id}",
        delivery_id=delivery_id,
        event=event,
        action=action,
    )
    if event == "pull_request":
        return _pull_request(payload, files, common)
    issue = payload.get("issue")
    if not isinstance(issue, dict) or not isinstance(issue.get("title"), str):
        raise MalformedInputError(f"{event} payload has no issue.title")
    if event == "issues":
        return _issue(issue, common)
    return _issue_comment(payload, issue, common)


def _pull_request(
    payload: dict[str, Any], files: Sequence[dict[str, Any]] | None, common: dict[str, Any]
) -> NormalizedInteraction:
    """A ``pull_request`` delivery: title, cleaned body and the files block.

    Raises:
        MalformedInputError: no ``pull_request.title``.
    """
    pr = payload.get("pull_request")
    if not isinstance(pr, dict) or not isinstance(pr.get("title"), str):
        raise MalformedInputError("pull_request payload has no pull_request.title")
    files_text, kept = _files_block(files)
    body = clean_text(pr.get("body"))
    parts = [f"Pull request #{pr.get('number')}: {pr['title']}"]
    if body:
        parts.append(body)
    if files_text:
        parts.append(files_text)
    raw_labels = pr.get("labels")
    labels = [
        lb.get("name") for lb in (raw_labels or []) if isinstance(lb, dict)
    ] if isinstance(raw_labels, list) else []  # fmt: skip
    return NormalizedInteraction(
        kind="pull_request",
        content="\n\n".join(parts),
        external_id=_text(pr.get("html_url")),
        author=_login(pr),
        occurred_at=_parse_time(pr.get("merged_at") or pr.get("updated_at")),
        metadata={
            "number": pr.get("number"),
            "action": common["action"],
            "merged": bool(pr.get("merged")),
            "additions": pr.get("additions"),
            "deletions": pr.get("deletions"),
            "changed_files": pr.get("changed_files"),
            "labels": labels,
            "files": kept,
        },
        **common,
    )


def _issue(issue: dict[str, Any], common: dict[str, Any]) -> NormalizedInteraction:
    """An ``issues`` delivery: title and cleaned body."""
    body = clean_text(issue.get("body"))
    content = f"Issue #{issue.get('number')}: {issue['title']}" + (f"\n\n{body}" if body else "")
    return NormalizedInteraction(
        kind="issue",
        content=content,
        external_id=_text(issue.get("html_url")),
        author=_login(issue),
        occurred_at=_parse_time(issue.get("updated_at")),
        metadata={
            "number": issue.get("number"),
            "action": common["action"],
            "state": issue.get("state"),
        },
        **common,
    )


def _issue_comment(
    payload: dict[str, Any], issue: dict[str, Any], common: dict[str, Any]
) -> Normalized:
    """An ``issue_comment`` delivery: the comment with the title of its issue or pull request;
    skipped when the comment is empty.

    Raises:
        MalformedInputError: no ``comment`` object.
    """
    comment = payload.get("comment")
    if not isinstance(comment, dict):
        raise MalformedInputError("issue_comment payload has no comment")
    body = clean_text(comment.get("body"))
    if not body:
        return SkippedDelivery(
            common["delivery_id"], common["event"], common["action"], "comment body is empty",
            common["project"], common["github_repo_id"],
        )  # fmt: skip
    is_pr = "pull_request" in issue
    where = "pull request" if is_pr else "issue"
    content = f"Comment on {where} #{issue.get('number')} ({issue['title']}):\n\n{body}"
    return NormalizedInteraction(
        kind="issue_comment",
        content=content,
        external_id=_text(comment.get("html_url")),
        author=_login(comment),
        occurred_at=_parse_time(comment.get("updated_at")),
        metadata={
            "number": issue.get("number"),
            "action": common["action"],
            "on_pull_request": is_pr,
        },
        **common,
    )


def normalize_interaction(obj: dict[str, Any]) -> NormalizedInteraction:
    """Turn a plain interaction object into an interaction.

    Without ``idempotency_key`` the key is ``sha256:<hash of project, kind and content>``.

    Raises:
        MalformedInputError: ``project`` or ``content`` missing or not strings.
    """
    project, content = obj.get("project"), obj.get("content")
    if not isinstance(project, str) or not project.strip():
        raise MalformedInputError("interaction needs a non-empty string 'project'")
    if not isinstance(content, str):
        raise MalformedInputError("interaction needs a string 'content'")
    project, content = safe_text(project.strip()), safe_text(content.strip())
    kind = safe_text(obj["kind"]) if isinstance(obj.get("kind"), str) else "conversation"
    metadata = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
    key = obj.get("idempotency_key")
    if not isinstance(key, str) or not key:
        digest = hashlib.sha256(f"{project}\x00{kind}\x00{content}".encode()).hexdigest()
        key = f"sha256:{digest}"
    return NormalizedInteraction(
        project=project,
        source=str(obj.get("source") or "api"),
        kind=str(kind),
        content=content,
        idempotency_key=key,
        author=obj.get("author") if isinstance(obj.get("author"), str) else None,
        external_id=obj.get("external_id") if isinstance(obj.get("external_id"), str) else None,
        occurred_at=_parse_time(obj.get("occurred_at")),
        metadata=dict(metadata),  # type: ignore[arg-type]
    )


def parse_record(obj: Any) -> Normalized:
    """Normalise one input line: a delivery when it has ``event`` and ``payload``, else an
    interaction object.

    Raises:
        MalformedInputError: neither shape, or a shape with bad fields.
    """
    if not isinstance(obj, dict):
        raise MalformedInputError("line is not a JSON object")
    if "event" in obj and "payload" in obj:
        event, delivery = obj.get("event"), obj.get("delivery")
        if not isinstance(event, str) or not isinstance(delivery, str):
            raise MalformedInputError("delivery needs string 'event' and 'delivery'")
        files = obj.get("files") if isinstance(obj.get("files"), list) else None
        try:
            return normalize_delivery(event, delivery, obj["payload"], files)
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            # A field of an unexpected JSON type: the record is malformed, not the program.
            raise MalformedInputError(f"badly typed field in {event} payload: {exc!r}") from exc
    if "content" in obj:
        return normalize_interaction(obj)
    raise MalformedInputError("neither a delivery (event, delivery, payload) nor an interaction")
