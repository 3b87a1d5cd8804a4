"""Feedback to GitHub: one comment per pull request or issue delivery, listing the most similar
earlier patterns of the project.

Runs after embedding (the embed task hands on the interactions of the patterns it embedded), only
when ``PATTERNS_GITHUB_TOKEN`` is set, and only for deliveries that open something
(:data:`FEEDBACK_ACTIONS`): commenting on every edit or close would be noise. Similar patterns come
from a pgvector cosine search (``<=>``, HNSW index) over the project's active, embedded patterns
from other interactions, created before the interaction's own.

Never twice for one delivery: the ``webhook_deliveries`` row is locked (``FOR UPDATE``) while the
comment is posted, and ``feedback_comment_id`` / ``feedback_posted_at`` are set in the same
transaction; a delivery that has them is left alone. A process that dies after GitHub accepted
the comment and before the commit leaves the row without them: so before posting, the issue's
comments are read and one carrying the delivery's hidden marker (:func:`feedback_marker`) is
recorded as the delivery's comment instead of posting another. Either way the comment and the
patterns it listed are recorded in ``feedback_comments`` (:func:`record_feedback_comment`), whose
reactions and replies :mod:`pipeline.github.verdicts` turns into validations.

Everything from the store or the delivery (titles, types, the project's name, source URLs, the
delivery id) is escaped for Markdown and HTML (:func:`escape_markdown`, :func:`safe_link`): a
title cannot inject markup, a link or an ``@`` mention.

The REST calls are ``GET`` and ``POST /repos/{owner}/{repo}/issues/{number}/comments``
(docs.github.com, "REST API endpoints for issue comments"; pull requests are issues for
comments), through httpx.
"""

from __future__ import annotations

import string
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import structlog
from sqlalchemy import func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.engine import ALL_PROJECTS, Database, ProjectScope, rescope
from pipeline.db.models import FeedbackComment, Interaction, Pattern, Project, WebhookDelivery
from pipeline.db.status import InteractionStatus
from pipeline.github.client import GitHubClient
from pipeline.settings import Settings
from pipeline.store.usage import record_usage

log = structlog.get_logger(__name__)

#: Event → actions that get a comment.
FEEDBACK_ACTIONS: dict[str, frozenset[str]] = {
    "pull_request": frozenset({"opened", "reopened", "ready_for_review"}),
    "issues": frozenset({"opened", "reopened"}),
}
#: Marker in every comment, so people and tools can tell ours apart (the delivery id goes in
#: percent-encoded: :func:`feedback_marker`).
COMMENT_MARKER = "<!-- pattern-pipeline:feedback delivery={delivery} -->"
#: Longest text of one table cell, in characters before escaping (GitHub refuses comments over
#: 65,536 characters).
MAX_CELL_CHARS = 200
#: Zero-width space after ``@`` and ``#``: the text reads the same, but GitHub finds no mention or
#: issue reference in it (what Dependabot does in release notes).
_ZERO_WIDTH = "&#8203;"
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}
#: Characters a link's destination keeps; any other is percent-encoded.
_URL_SAFE = ":/?#&=%+,;@-._~"


def feedback_marker(delivery_id: str) -> str:
    """The hidden HTML comment that names the delivery a comment was posted for. The id is
    percent-encoded (GitHub's GUIDs are unchanged), so no id can end the comment early and two
    ids never share a marker."""
    return COMMENT_MARKER.format(delivery=quote(delivery_id, safe=""))


def escape_markdown(value: str) -> str:
    """``value`` as literal text in a Markdown table cell on GitHub: whitespace runs (newlines
    included) folded to one space, cut to :data:`MAX_CELL_CHARS` (``…`` appended), HTML's
    special characters as entities, every other ASCII punctuation character backslash-escaped
    (no emphasis, link, code span, table pipe or heading), and a zero-width space after ``@``
    and ``#`` (no mention, team ping or issue reference)."""
    text = " ".join(value.split())
    if len(text) > MAX_CELL_CHARS:
        text = text[: MAX_CELL_CHARS - 1] + "…"
    out = []
    for ch in text:
        if ch in _ENTITIES:
            out.append(_ENTITIES[ch])
        elif ch in "@#":
            out.append(ch + _ZERO_WIDTH)
        elif ch in string.punctuation:
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def safe_link(url: str) -> str | None:
    """``url`` as a Markdown link destination, or ``None`` when it is not an absolute
    ``http``/``https`` URL with a host (``javascript:``, ``data:``, relative and malformed ones).
    Characters outside :data:`_URL_SAFE` (spaces, parentheses, ``<>``, pipes, backticks,
    brackets, backslashes) are percent-encoded, so it cannot end the link or the cell early."""
    url = url.strip()
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        return None
    return quote(url, safe=_URL_SAFE)


@dataclass(frozen=True)
class SimilarPattern:
    """An earlier pattern close to one of the interaction's; ``similarity`` = 1 - cosine
    distance, in [-1, 1]."""

    id: uuid.UUID
    title: str
    type: str
    similarity: float
    source_url: str | None


def similar_patterns(session: Session, interaction_id: int, limit: int) -> list[SimilarPattern]:
    """The ``limit`` most similar earlier patterns of the interaction's project, best first.

    For each embedded pattern of the interaction, its ``limit`` nearest neighbours among the
    project's active, embedded patterns of other interactions created before it; a neighbour
    found from several patterns keeps its best similarity.
    """
    own = session.execute(
        select(Pattern.id, Pattern.project_id, Pattern.embedding, Pattern.created_at).where(
            Pattern.source_interaction_id == interaction_id, Pattern.embedding.is_not(None)
        )
    ).all()
    best: dict[uuid.UUID, SimilarPattern] = {}
    for _, project_id, embedding, created_at in own:
        distance = Pattern.embedding.cosine_distance(embedding)
        rows = session.execute(
            select(Pattern.id, Pattern.title, Pattern.type, distance, Interaction.external_id)
            .outerjoin(Interaction, Interaction.id == Pattern.source_interaction_id)
            .where(
                Pattern.project_id == project_id,
                Pattern.is_active.is_(True),
                Pattern.embedding.is_not(None),
                Pattern.source_interaction_id.is_distinct_from(interaction_id),
                Pattern.created_at < created_at,
            )
            .order_by(distance)
            .limit(limit)
        ).all()
        row: Any
        for row in rows:
            pid, title, ptype, dist, url = row
            sim = round(1.0 - float(dist), 4)
            if pid not in best or best[pid].similarity < sim:
                best[pid] = SimilarPattern(pid, title, ptype, sim, url)
    return sorted(best.values(), key=lambda p: (-p.similarity, str(p.id)))[:limit]


def render_comment(delivery_id: str, project: str, similar: Sequence[SimilarPattern]) -> str:
    """The comment's Markdown: the hidden marker (:func:`feedback_marker`), a heading and one
    table row per pattern, every stored string escaped (:func:`escape_markdown`) and a source
    link only for an ``http(s)`` URL (:func:`safe_link`)."""
    cell = escape_markdown
    lines = [
        feedback_marker(delivery_id),
        f"**Similar patterns seen earlier in {cell(project)}**",
        "",
        "| Pattern | Type | Similarity | From |",
        "| --- | --- | --- | --- |",
    ]
    for p in similar:
        link = safe_link(p.source_url) if p.source_url else None
        source = f"[source]({link})" if link else ""
        lines.append(f"| {cell(p.title)} | {cell(p.type)} | {p.similarity:.2f} | {source} |")
    lines += ["", "_Posted by pattern-pipeline._"]
    return "\n".join(lines)


@dataclass
class FeedbackResult:
    """What :func:`post_feedback` did: ``posted`` maps delivery id → comment id; ``skipped``
    maps interaction id → reason."""

    posted: dict[str, int] = field(default_factory=dict)
    skipped: dict[int, str] = field(default_factory=dict)


def feedback_candidates(db: Database, pattern_ids: Sequence[uuid.UUID]) -> list[int]:
    """Interactions of these patterns that came from a delivery which may get a comment (its
    event and action in :data:`FEEDBACK_ACTIONS`, none posted yet), by id."""
    if not pattern_ids:
        return []
    wanted = [
        (WebhookDelivery.event == event) & WebhookDelivery.action.in_(sorted(actions))
        for event, actions in FEEDBACK_ACTIONS.items()
    ]
    with db.session(ALL_PROJECTS) as session:
        ids = session.scalars(
            select(WebhookDelivery.interaction_id)
            .join(Pattern, Pattern.source_interaction_id == WebhookDelivery.interaction_id)
            .where(
                Pattern.id.in_(list(pattern_ids)),
                WebhookDelivery.feedback_comment_id.is_(None),
                or_(*wanted),
            )
            .distinct()
            .order_by(WebhookDelivery.interaction_id)
        ).all()
    return [int(i) for i in ids if i is not None]


def post_feedback(
    *, db: Database, client: GitHubClient, settings: Settings, interaction_ids: Sequence[int]
) -> FeedbackResult:
    """Post one comment per eligible delivery of ``interaction_ids`` (see the module notes).

    An interaction is skipped (with the reason in the result) when it has no delivery, its
    delivery already has a comment or is being commented on by another task, its event/action
    gets no comment, it is not ``extracted``, it has no number, or no similar pattern exists;
    and when the issue already carries a comment with the delivery's marker (an earlier attempt
    died after posting it), which is then recorded as the delivery's comment.

    Raises:
        RetryableError: GitHub could not be reached or asked to come back later (nothing was
            recorded for that delivery; those before it keep their comments).
        PermanentError: GitHub refused to list the comments or to take one.
    """
    out = FeedbackResult()
    for iid in dict.fromkeys(interaction_ids):
        with db.session(ALL_PROJECTS) as session:
            row = session.execute(
                select(WebhookDelivery, Interaction, Project.name)
                .join(Interaction, Interaction.id == WebhookDelivery.interaction_id)
                .join(Project, Project.id == Interaction.project_id)
                .where(WebhookDelivery.interaction_id == iid)
                .with_for_update(of=WebhookDelivery, skip_locked=True)
            ).first()
            reason = _skip_reason(row)
            if reason is None:
                delivery, inter, project = row  # type: ignore[misc]
                # The lookup spans projects (a delivery id names its project); the patterns
                # listed are read under the interaction's project's row-level security.
                rescope(session, ProjectScope(inter.project_id))
                similar = similar_patterns(session, iid, settings.feedback_max_patterns)
                if not similar:
                    reason = "no similar earlier patterns"
            if reason is not None:
                out.skipped[iid] = reason
                continue
            number = int(inter.metadata_["number"])
            found = existing_comment(client, project, number, delivery.delivery_id)
            if found is not None:
                _record_comment(session, delivery, inter.project_id, number, similar, found)
                out.skipped[iid] = f"comment already on GitHub ({found}), recorded"
                log.info("feedback_found", delivery=delivery.delivery_id, repo=project,
                         number=number, comment=found)  # fmt: skip
                continue
            comment_id = client.create_issue_comment(
                project, number, render_comment(delivery.delivery_id, project, similar)
            )
            _record_comment(session, delivery, inter.project_id, number, similar, comment_id)
            record_usage(
                session,
                {p.id: inter.project_id for p in similar},
                used_by="feedback:github",
                context={"delivery": delivery.delivery_id, "comment_id": comment_id},
            )
            out.posted[delivery.delivery_id] = comment_id
            log.info(
                "feedback_posted", delivery=delivery.delivery_id, repo=project, number=number,
                comment=comment_id, patterns=len(similar),
            )  # fmt: skip
    return out


def existing_comment(client: GitHubClient, repo: str, number: int, delivery_id: str) -> int | None:
    """The id of the comment on issue or pull request ``number`` of ``repo`` that carries the
    delivery's marker (:func:`feedback_marker`), or ``None``; reads the comments oldest first
    and stops at the first match.

    Raises:
        RetryableError: GitHub could not be reached or asked to come back later.
        PermanentError: GitHub refused the listing.
    """
    marker = feedback_marker(delivery_id)
    return next((c.id for c in client.issue_comments(repo, number) if marker in c.body), None)


def record_feedback_comment(
    session: Session,
    *,
    comment_id: int,
    project_id: uuid.UUID,
    delivery_id: str | None,
    repo: str,
    issue_number: int,
    pattern_ids: Sequence[uuid.UUID],
) -> None:
    """Remember a feedback comment we posted (or found on GitHub) and the patterns it listed,
    in the caller's transaction; a comment already recorded is left as it is."""
    session.execute(
        insert(FeedbackComment)
        .values(
            comment_id=comment_id,
            project_id=project_id,
            delivery_id=delivery_id,
            repo=repo,
            issue_number=issue_number,
            pattern_ids=[str(p) for p in pattern_ids],
        )
        .on_conflict_do_nothing(index_elements=["comment_id"])
    )


def _record_comment(
    session: Session,
    delivery: WebhookDelivery,
    project_id: uuid.UUID,
    number: int,
    similar: Sequence[SimilarPattern],
    comment_id: int,
) -> None:
    """Record ``comment_id`` as the delivery's comment, and as a feedback comment listing
    ``similar`` (:func:`record_feedback_comment`)."""
    session.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery.id)
        .values(feedback_comment_id=comment_id, feedback_posted_at=func.now())
    )
    repo = session.scalar(select(Project.name).where(Project.id == project_id))
    record_feedback_comment(
        session,
        comment_id=comment_id,
        project_id=project_id,
        delivery_id=delivery.delivery_id,
        repo=str(repo),
        issue_number=number,
        pattern_ids=[p.id for p in similar],
    )


def _skip_reason(row: Any) -> str | None:
    if row is None:
        return "no webhook delivery (or another task holds it)"
    delivery, inter, _ = row
    if delivery.feedback_comment_id is not None or delivery.feedback_posted_at is not None:
        return "comment already posted"
    if delivery.action not in FEEDBACK_ACTIONS.get(delivery.event, frozenset()):
        return f"no comment for {delivery.event}.{delivery.action}"
    if inter.status != InteractionStatus.EXTRACTED.value:
        return f"interaction is {inter.status}"
    if not isinstance(inter.metadata_.get("number"), int):
        return "delivery has no issue or pull request number"
    return None
