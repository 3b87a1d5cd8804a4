"""Embedding patterns: their text → normalised vectors in ``patterns.embedding``, in batches;
then the store learns: a newly embedded active pattern within ``merge_max_distance`` cosine
distance of an older active pattern of the same project and type (from another interaction, and
naming the same identifiers) merges into it (:mod:`pipeline.store.merge`).

One transaction per project, under its row-level security and holding its writer lock
(:func:`pipeline.store.events.lock_projects`): two embed workers cannot merge one idea twice, and
whichever of a close pair is embedded second finds the other.

The twins of a batch are looked up in one statement (:func:`_twin_candidates`: each new
pattern's nearest candidates over the HNSW index, as :func:`pipeline.store.merge.embedding_twin`
finds them) instead of a search per pattern, which cost more than the vectors' own writes
(docs/PERFORMANCE.md). Merges inside the batch only ever deactivate patterns, so a pattern's
candidates less those deactivated since are the head of what a search at its turn would return;
where that head decides nothing and something was taken out of it, the pattern is searched for
again on its own (:func:`_decide`), so the outcome is the per-pattern search's.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import structlog
from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from pipeline.db.engine import ALL_PROJECTS, Database, ProjectScope
from pipeline.db.models import Pattern
from pipeline.dispatch import Dispatcher
from pipeline.github.feedback import feedback_candidates
from pipeline.settings import Settings
from pipeline.store.embedder import Embedder, pattern_text
from pipeline.store.events import NewEvent, lock_projects, record
from pipeline.store.lifecycle import may_merge_by_embedding
from pipeline.store.merge import EMBEDDING_CANDIDATES, Twin, embedding_twin, merge_into

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
    candidates = _twin_candidates(session, [pid for pid, _ in embedded])
    deactivated: set[uuid.UUID] = set()
    for pid, _ in embedded:
        twin = _decide(session, pid, candidates.get(pid), deactivated, settings.merge_max_distance)
        if twin is None:
            continue
        canonical, other = (twin.id, pid) if twin.older else (pid, twin.id)
        found = merge_into(
            session, canonical_id=canonical, merged_id=other, settings=settings,
            match="embedding", distance=twin.distance,
        )  # fmt: skip
        deactivated.add(other)
        merged += 1 if found else 0
        events += found
    record(session, events)
    return merged


#: Each new pattern's nearest active candidates of its project and type, from other
#: interactions: the search of :func:`pipeline.store.merge.embedding_twin`, for many at once
#: (a LATERAL join runs one HNSW index scan per pattern inside one statement).
_CANDIDATES = text(
    "SELECT me.id AS pid, me.title AS my_title, me.created_at AS my_created,"
    " me.source_interaction_id AS my_source, c.id, c.title, c.created_at,"
    " c.source_interaction_id, c.d"
    " FROM patterns me CROSS JOIN LATERAL ("
    "  SELECT q.id, q.title, q.created_at, q.source_interaction_id,"
    "   q.embedding <=> me.embedding AS d FROM patterns q"
    "  WHERE q.project_id = me.project_id AND q.type = me.type AND q.is_active"
    "   AND q.id <> me.id AND q.embedding IS NOT NULL"
    "   AND q.source_interaction_id IS DISTINCT FROM me.source_interaction_id"
    "  ORDER BY q.embedding <=> me.embedding LIMIT :k) c"
    " WHERE me.id = ANY(:ids) AND me.is_active AND me.embedding IS NOT NULL"
)


def _twin_candidates(session: Session, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Any]]:
    """Pattern id → its candidate rows (module docstring), nearest first."""
    session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    out: dict[uuid.UUID, list[Any]] = {pid: [] for pid in ids}
    for row in session.execute(_CANDIDATES, {"ids": list(ids), "k": EMBEDDING_CANDIDATES}):
        out[row.pid].append(row)
    for rows in out.values():
        rows.sort(key=lambda r: float(r.d))
    return out


def _decide(
    session: Session,
    pid: uuid.UUID,
    candidates: list[Any] | None,
    deactivated: set[uuid.UUID],
    max_distance: float,
) -> Twin | None:
    """``pid``'s embedding twin, as :func:`pipeline.store.merge.embedding_twin` finds it, from
    its precomputed ``candidates`` less the patterns ``deactivated`` since (module docstring);
    searches again where those cannot decide."""
    if pid in deactivated or candidates is None:
        return embedding_twin(session, pid, max_distance)
    left = [c for c in candidates if c.id not in deactivated]
    for row in left:
        d = float(row.d)
        if d > max_distance:
            return None
        if may_merge_by_embedding(row.my_title, row.title):
            theirs = (row.created_at, row.source_interaction_id or 0, str(row.id))
            mine = (row.my_created, row.my_source or 0, str(pid))
            return Twin(row.id, row.title, round(d, 4), theirs < mine)
    if len(left) < len(candidates):  # the search at this turn may reach further: ask it
        return embedding_twin(session, pid, max_distance)
    return None


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
