"""Embedding patterns: their text → normalised vectors in ``patterns.embedding``, in batches;
then the store learns: a newly embedded active pattern within ``merge_max_distance`` cosine
distance of an older active pattern of the same project and type (from another interaction, and
naming the same identifiers) merges into it (:mod:`pipeline.store.merge`).

One transaction per project, under its row-level security and holding its writer lock
(:func:`pipeline.store.events.lock_projects`): two embed workers cannot merge one idea twice, and
whichever of a close pair is embedded second finds the other.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from pipeline.db.engine import ALL_PROJECTS, Database, ProjectScope
from pipeline.db.models import Pattern
from pipeline.dispatch import Dispatcher
from pipeline.github.feedback import feedback_candidates
from pipeline.settings import Settings
from pipeline.store.embedder import Embedder, pattern_text
from pipeline.store.events import NewEvent, lock_projects, record
from pipeline.store.merge import embedding_twin, merge_into

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class EmbedResult:
    """What :func:`embed_patterns` did: patterns embedded, and merged into a twin."""

    embedded: int
    merged: int


def embed_patterns(
    *,
    db: Database,
    embedder: Embedder,
    settings: Settings,
    pattern_ids: Sequence[uuid.UUID],
) -> EmbedResult:
    """Embed the given patterns that have no embedding yet, then merge each new active one into
    its embedding twin, if it has one (module docstring).

    Idempotent: patterns already embedded are skipped, merges are keyed on their validation.
    """
    if not pattern_ids:
        return EmbedResult(0, 0)
    with db.session(ALL_PROJECTS) as session:
        rows = session.execute(
            select(Pattern.id, Pattern.project_id, Pattern.title, Pattern.content)
            .where(Pattern.id.in_(list(pattern_ids)), Pattern.embedding.is_(None))
            .order_by(Pattern.created_at, Pattern.id)
        ).all()
    if not rows:
        return EmbedResult(0, 0)
    vectors = embedder.encode([pattern_text(r.title, r.content) for r in rows])
    by_project: dict[uuid.UUID, list[tuple[uuid.UUID, Any]]] = {}
    for row, vec in zip(rows, vectors, strict=True):
        by_project.setdefault(row.project_id, []).append((row.id, vec))
    merged = 0
    for project_id in sorted(by_project, key=str):
        with db.session(ProjectScope(project_id)) as session:
            lock_projects(session, [project_id])
            merged += _embed_and_merge(session, project_id, by_project[project_id], embedder,
                                       settings)  # fmt: skip
    log.info("embedded", patterns=len(rows), merged=merged)
    return EmbedResult(len(rows), merged)


def _embed_and_merge(
    session: Session,
    project_id: uuid.UUID,
    embedded: Sequence[tuple[uuid.UUID, Any]],
    embedder: Embedder,
    settings: Settings,
) -> int:
    """Store one project's new embeddings, then merge each pattern (oldest first) into its
    embedding twin; returns how many merges happened."""
    session.execute(
        update(Pattern),
        [
            {"id": pid, "embedding": vec, "embedding_model": embedder.model_name}
            for pid, vec in embedded
        ],
    )
    events: list[NewEvent] = []
    merged = 0
    for pid, _ in embedded:
        twin = embedding_twin(session, pid, settings.merge_max_distance)
        if twin is None:
            continue
        canonical, other = (twin.id, pid) if twin.older else (pid, twin.id)
        found = merge_into(
            session, canonical_id=canonical, merged_id=other, settings=settings,
            match="embedding", distance=twin.distance,
        )  # fmt: skip
        merged += 1 if found else 0
        events += found
    record(session, events)
    return merged


@dataclass(frozen=True)
class EmbedSummary:
    """What one embed task did: patterns embedded, merged into a twin, and interactions handed
    on for a GitHub feedback comment."""

    embedded: int
    merged: int
    feedback: int


def embed_and_hand_on(
    *,
    db: Database,
    embedder: Embedder,
    settings: Settings,
    dispatcher: Dispatcher,
    pattern_ids: Sequence[uuid.UUID],
) -> EmbedSummary:
    """The embed task: :func:`embed_patterns`, then (with ``PATTERNS_GITHUB_TOKEN`` set) publish
    feedback comments for the webhook deliveries the patterns came from.

    Raises:
        RetryableError: the database or the broker is unavailable.
    """
    result = embed_patterns(db=db, embedder=embedder, settings=settings, pattern_ids=pattern_ids)
    feedback: list[int] = []
    if settings.github_token is not None:
        feedback = feedback_candidates(db, pattern_ids)
        if feedback:
            dispatcher.feedback(feedback)
    return EmbedSummary(result.embedded, result.merged, len(feedback))
