"""Embedding patterns: their text → normalised vectors in ``patterns.embedding``, in batches.

Also records *recurrence validations*: when a newly embedded pattern lies within
``validation_max_distance`` (cosine distance, pgvector ``<=>``) of a pattern that came from another
interaction of the same project, the older of the two is confirmed by the newer one
(``pattern_validations`` row, ``validation_count`` + 1). Whichever of the pair is embedded second
finds the other, and a per-project advisory lock serialises that step, so each close pair is
recorded once whatever order the embed tasks run in.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import structlog
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.engine import Database
from pipeline.db.models import Pattern, PatternValidation
from pipeline.db.status import ValidationResult, ValidationStatus
from pipeline.dispatch import Dispatcher
from pipeline.github.feedback import feedback_candidates
from pipeline.settings import Settings
from pipeline.store.embedder import Embedder, pattern_text

log = structlog.get_logger(__name__)

#: Nearest neighbours examined per new pattern for recurrence validation.
NEIGHBOURS = 10


@dataclass(frozen=True)
class EmbedResult:
    """What :func:`embed_patterns` did."""

    embedded: int
    validations: int


def embed_patterns(
    *,
    db: Database,
    embedder: Embedder,
    settings: Settings,
    pattern_ids: Sequence[uuid.UUID],
) -> EmbedResult:
    """Embed the given patterns that have no embedding yet, then record recurrence validations.

    Idempotent: patterns already embedded are skipped; validation pairs are unique.
    """
    if not pattern_ids:
        return EmbedResult(0, 0)
    with db.session() as session:
        rows = session.execute(
            select(Pattern.id, Pattern.title, Pattern.content)
            .where(Pattern.id.in_(list(pattern_ids)), Pattern.embedding.is_(None))
            .order_by(Pattern.id)
        ).all()
    if not rows:
        return EmbedResult(0, 0)
    vectors = embedder.encode([pattern_text(r.title, r.content) for r in rows])
    with db.session() as session:
        session.execute(
            update(Pattern),
            [
                {"id": pid, "embedding": vec, "embedding_model": embedder.model_name}
                for (pid, _, _), vec in zip(rows, vectors, strict=True)
            ],
        )
    validations = record_recurrences(
        db=db, pattern_ids=[r[0] for r in rows], max_distance=settings.validation_max_distance
    )
    log.info("embedded", patterns=len(rows), validations=validations)
    return EmbedResult(len(rows), validations)


def record_recurrences(
    *, db: Database, pattern_ids: Sequence[uuid.UUID], max_distance: float
) -> int:
    """Confirm earlier patterns that the given (embedded) patterns repeat. Returns rows added."""
    added = 0
    with db.session() as session:
        projects = session.scalars(
            select(Pattern.project_id).where(Pattern.id.in_(list(pattern_ids))).distinct()
        ).all()
        for project_id in sorted(projects, key=str):
            session.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:p))"), {"p": f"recur:{project_id}"}
            )
        for pid in pattern_ids:
            added += _recur_one(session, pid, max_distance)
    return added


def _recur_one(session: Session, pattern_id: uuid.UUID, max_distance: float) -> int:
    me = session.execute(
        select(Pattern.project_id, Pattern.source_interaction_id, Pattern.embedding).where(
            Pattern.id == pattern_id
        )
    ).one()
    if me.embedding is None:
        return 0
    distance = Pattern.embedding.cosine_distance(me.embedding)
    neighbours = session.execute(
        select(Pattern.id, Pattern.source_interaction_id, distance.label("d"))
        .where(
            Pattern.project_id == me.project_id,
            Pattern.id != pattern_id,
            Pattern.embedding.is_not(None),
            Pattern.source_interaction_id.is_distinct_from(me.source_interaction_id),
        )
        .order_by(distance)
        .limit(NEIGHBOURS)
    ).all()
    rows = []
    for other_id, other_interaction, raw_distance in neighbours:
        d = float(raw_distance)  # type: ignore[arg-type]
        if d > max_distance:
            break
        # The older pattern (earlier interaction, then smaller id) is the one confirmed.
        mine = (me.source_interaction_id or 0, str(pattern_id))
        theirs = (other_interaction or 0, str(other_id))
        older, newer, newer_interaction = (
            (other_id, pattern_id, me.source_interaction_id)
            if theirs < mine
            else (pattern_id, other_id, other_interaction)
        )
        rows.append(
            {
                "project_id": me.project_id,
                "pattern_id": older,
                "validating_pattern_id": newer,
                "validator": "embedding-recurrence",
                "validation_type": "recurrence",
                "result": ValidationResult.CONFIRMED.value,
                "confidence": round(1.0 - d, 4),
                "evidence": {"cosine_distance": round(d, 4)},
                "interaction_id": newer_interaction,
            }
        )
    if not rows:
        return 0
    added = (
        session.execute(
            insert(PatternValidation)
            .values(rows)
            .on_conflict_do_nothing(constraint="uq_pattern_validations_pair")
            .returning(PatternValidation.pattern_id)
        )
        .scalars()
        .all()
    )
    for confirmed in added:
        session.execute(
            update(Pattern)
            .where(Pattern.id == confirmed)
            .values(
                validation_count=Pattern.validation_count + 1,
                validation_status=ValidationStatus.VALIDATED.value,
                updated_at=func.now(),
            )
        )
    return len(added)


@dataclass(frozen=True)
class EmbedSummary:
    """What one embed task did: patterns embedded, recurrence validations recorded, and
    interactions handed on for a GitHub feedback comment."""

    embedded: int
    validations: int
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
    return EmbedSummary(result.embedded, result.validations, len(feedback))
