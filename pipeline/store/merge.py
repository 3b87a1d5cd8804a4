"""One idea, one active pattern: finding a new pattern's twin and merging it into the canonical
one.

A twin is an active pattern of the same project and type with the same normalised title
(:func:`title_twin`, at extraction) or, once embedded, within ``merge_max_distance`` cosine
distance (:func:`embedding_twin`) and naming the same identifiers
(:func:`pipeline.store.lifecycle.may_merge_by_embedding`). :func:`merge_into` folds the newer
pattern into the older: the merged row stays, inactive and ``superseded_by`` the canonical one;
the canonical gains a ``merge`` validation (the merged pattern's interaction and evidence), its
counts, strength and status are recomputed from its validation rows (:func:`refresh`), and the
merged pattern's relationships, validations, usage and own merged rows move over to it.

Callers hold the project's writer lock (:func:`pipeline.store.events.lock_projects`), so two
workers cannot merge the same idea into two canonicals; a unique index on active
``(project_id, type, normalized_title)`` backs that up in the database.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import and_, delete, exists, func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.engine import CursorResult
from sqlalchemy.orm import Session, aliased

from pipeline.db.models import Pattern, PatternRelationship, PatternUsage, PatternValidation
from pipeline.db.status import EventType, ValidationResult, ValidationStatus, ValidationType
from pipeline.settings import Settings
from pipeline.store.events import NewEvent
from pipeline.store.lifecycle import may_merge_by_embedding, pattern_strength, validation_status

#: Candidates examined per embedding search (the nearest may differ in identifiers).
EMBEDDING_CANDIDATES = 5
#: ``normalize_title`` in SQL, applied to a bound value.
_NORMALIZE = "btrim(regexp_replace(lower(:title), '[^\\w]+', ' ', 'g'))"


def title_twin(session: Session, project_id: uuid.UUID, type_: str, title: str) -> uuid.UUID | None:
    """The project's active pattern of ``type_`` whose normalised title equals ``title``'s, or
    ``None``. One probe of the unique index on active ``(project_id, type, normalized_title)``,
    whatever the project's size."""
    return session.scalar(
        select(Pattern.id).where(
            Pattern.project_id == project_id,
            Pattern.type == type_,
            # ``is_active``, not ``is_active IS true``: only the plain column proves the partial
            # index's predicate; the other form scanned every pattern of the project's type
            # (4 ms at 20,000 patterns; docs/PERFORMANCE.md, "Scaling").
            Pattern.is_active,
            Pattern.normalized_title == text(_NORMALIZE).bindparams(title=title),
        )
    )


@dataclass(frozen=True)
class Twin:
    """An active pattern close to another: its id, title, age order and cosine distance."""

    id: uuid.UUID
    title: str
    distance: float
    older: bool


def embedding_twin(session: Session, pattern_id: uuid.UUID, max_distance: float) -> Twin | None:
    """The nearest active pattern of the same project and type, from another interaction, within
    ``max_distance`` cosine distance and naming the same identifiers as ``pattern_id``'s title;
    ``None`` when there is none (or the pattern is not active and embedded).

    Searches the HNSW index with pgvector's iterative scan, so the project and type filters do
    not starve the result.
    """
    me = session.execute(
        select(
            Pattern.project_id, Pattern.type, Pattern.title, Pattern.embedding,
            Pattern.source_interaction_id, Pattern.created_at,
        ).where(Pattern.id == pattern_id, Pattern.is_active.is_(True))
    ).first()  # fmt: skip
    if me is None or me.embedding is None:
        return None
    session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    distance = Pattern.embedding.cosine_distance(me.embedding)
    rows = session.execute(
        select(
            Pattern.id,
            Pattern.title,
            Pattern.created_at,
            Pattern.source_interaction_id,
            distance.label("d"),
        )
        .where(
            Pattern.project_id == me.project_id,
            Pattern.type == me.type,
            Pattern.is_active.is_(True),
            Pattern.id != pattern_id,
            Pattern.embedding.is_not(None),
            Pattern.source_interaction_id.is_distinct_from(me.source_interaction_id),
        )
        .order_by(distance)
        .limit(EMBEDDING_CANDIDATES)
    ).all()
    for row in sorted(rows, key=lambda r: float(r.d)):
        d = float(row.d)
        if d > max_distance:
            return None
        if may_merge_by_embedding(me.title, row.title):
            # Age: creation time, then arrival order (rows of one batch share a timestamp).
            theirs = (row.created_at, row.source_interaction_id or 0, str(row.id))
            mine = (me.created_at, me.source_interaction_id or 0, str(pattern_id))
            return Twin(row.id, row.title, round(d, 4), theirs < mine)
    return None


def merge_into(
    session: Session,
    *,
    canonical_id: uuid.UUID,
    merged_id: uuid.UUID,
    settings: Settings,
    match: str,
    distance: float | None = None,
) -> list[NewEvent]:
    """Fold ``merged_id`` into ``canonical_id`` (module docstring); returns the events to
    record (``pattern.merged``, and ``pattern.validated`` or ``pattern.contradicted`` when the
    canonical's status turned). Idempotent: the ``merge`` validation is the merge's key, so a
    second call does nothing and returns no events.

    Args:
        match: how the twin was found, ``title`` or ``embedding`` (kept in the evidence).
        distance: the cosine distance, for an embedding match.
    """
    merged = session.execute(
        select(Pattern.project_id, Pattern.title, Pattern.content, Pattern.source_interaction_id)
        .where(Pattern.id == merged_id)
        .with_for_update()
    ).one()
    evidence: dict[str, Any] = {"match": match, "title": merged.title}
    if distance is not None:
        evidence["cosine_distance"] = distance
    if merged.content.get("evidence"):
        evidence["evidence"] = merged.content["evidence"]
    added = session.execute(
        insert(PatternValidation)
        .values(
            project_id=merged.project_id, pattern_id=canonical_id, validating_pattern_id=merged_id,
            validator=f"{match}-merge", validation_type=ValidationType.MERGE.value,
            result=ValidationResult.CONFIRMED.value,
            confidence=1.0 if distance is None else round(max(0.0, 1.0 - distance), 4),
            evidence=evidence, interaction_id=merged.source_interaction_id,
        )
        .on_conflict_do_nothing(constraint="uq_pattern_validations_pair")
        .returning(PatternValidation.id)
    ).first()  # fmt: skip
    if added is None:
        return []
    session.execute(
        update(Pattern)
        .where(Pattern.id == merged_id)
        .values(is_active=False, superseded_by=canonical_id, updated_at=func.now())
    )
    moved_usage = _move_over(session, canonical_id, merged_id)
    before, after = refresh(session, canonical_id, settings, usage_added=moved_usage)
    payload = {"merged_id": str(merged_id), "title": merged.title, "match": match}
    if distance is not None:
        payload["cosine_distance"] = distance
    events = [NewEvent(merged.project_id, EventType.PATTERN_MERGED, payload, canonical_id)]
    events += status_events(merged.project_id, canonical_id, before, after)
    return events


def status_events(
    project_id: uuid.UUID, pattern_id: uuid.UUID, before: str, after: str
) -> list[NewEvent]:
    """``pattern.validated`` / ``pattern.contradicted`` when a status turned to it."""
    turned = {
        ValidationStatus.VALIDATED: EventType.PATTERN_VALIDATED,
        ValidationStatus.CONTRADICTED: EventType.PATTERN_CONTRADICTED,
    }
    if after == before or after not in turned:
        return []
    return [NewEvent(project_id, turned[ValidationStatus(after)], {"status": after}, pattern_id)]


def _move_over(session: Session, canonical_id: uuid.UUID, merged_id: uuid.UUID) -> int:
    """Give the canonical pattern what pointed at the merged one: its own merged rows, its
    validations (one per validating pattern and type), its usage rows and its edges. Returns
    how many usage rows moved."""
    session.execute(
        update(Pattern)
        .where(Pattern.superseded_by == merged_id, Pattern.id != canonical_id)
        .values(superseded_by=canonical_id, updated_at=func.now())
    )
    theirs = aliased(PatternValidation)
    session.execute(
        update(PatternValidation)
        .where(
            PatternValidation.pattern_id == merged_id,
            PatternValidation.validating_pattern_id.is_distinct_from(canonical_id),
            ~exists().where(
                theirs.pattern_id == canonical_id,
                theirs.validation_type == PatternValidation.validation_type,
                theirs.validating_pattern_id.is_not_distinct_from(
                    PatternValidation.validating_pattern_id
                ),
            ),
        )
        .values(pattern_id=canonical_id)
    )
    session.execute(delete(PatternValidation).where(PatternValidation.pattern_id == merged_id))
    moved = cast(
        "CursorResult[Any]",
        session.execute(
            update(PatternUsage)
            .where(PatternUsage.pattern_id == merged_id)
            .values(pattern_id=canonical_id)
        ),
    ).rowcount
    carry_relationships(session, canonical_id, merged_id)
    return int(moved or 0)


def carry_relationships(session: Session, canonical_id: uuid.UUID, merged_id: uuid.UUID) -> None:
    """Re-point the merged pattern's edges at the canonical one. An edge that would join the
    canonical to itself is dropped; one that already exists on the canonical accumulates
    (:func:`accumulate_edge`) and the duplicate is removed."""
    edges = session.execute(
        select(PatternRelationship)
        .where(
            (PatternRelationship.source_pattern_id == merged_id)
            | (PatternRelationship.target_pattern_id == merged_id)
        )
        .with_for_update()
    ).scalars().all()  # fmt: skip
    for edge in edges:
        source = canonical_id if edge.source_pattern_id == merged_id else edge.source_pattern_id
        target = canonical_id if edge.target_pattern_id == merged_id else edge.target_pattern_id
        if source == target:
            session.delete(edge)
            continue
        existing = session.execute(
            select(PatternRelationship).where(
                and_(
                    PatternRelationship.source_pattern_id == source,
                    PatternRelationship.target_pattern_id == target,
                    PatternRelationship.relationship_type == edge.relationship_type,
                )
            )
        ).scalar_one_or_none()
        if existing is None:
            edge.source_pattern_id, edge.target_pattern_id = source, target
            continue
        accumulate_edge(existing, edge.strength, edge.confidence, 1 + edge.validation_count)
        existing.contradiction_count += edge.contradiction_count
        session.delete(edge)
    session.flush()


def noisy_or(a: float, b: float) -> float:
    """Strength of an edge seen twice, as independent evidence: ``1 - (1 - a)(1 - b)``
    (the noisy-OR of J. Pearl, "Probabilistic Reasoning in Intelligent Systems", 1988, §4.3)."""
    return round(1 - (1 - a) * (1 - b), 4)


def accumulate_edge(
    edge: PatternRelationship, strength: float, confidence: float, sightings: int
) -> None:
    """A repeated edge: strength by :func:`noisy_or`, the higher confidence, ``sightings`` more
    confirmations."""
    edge.strength = noisy_or(float(edge.strength), strength)
    edge.confidence = max(float(edge.confidence), confidence)
    edge.validation_count += sightings


def refresh(
    session: Session, pattern_id: uuid.UUID, settings: Settings, *, usage_added: int = 0
) -> tuple[str, str]:
    """Recompute a pattern's counts from its rows: ``validation_count`` (confirmations),
    ``contradiction_count``, ``pattern_strength`` and ``validation_status``
    (:mod:`pipeline.store.lifecycle`; a status a person set, ``rejected`` or ``contested``,
    stays); ``usage_count`` grows by ``usage_added`` (usage rows just moved to it by a merge).
    ``usage_count`` is a counter kept in step with its ``pattern_usage`` rows by whoever adds
    or moves them (:func:`pipeline.store.usage.record_usage`), not recounted here: a recount
    would read every usage row the pattern ever had. Returns ``(status before, status after)``.
    """
    counts = dict(
        session.execute(
            select(PatternValidation.result, func.count())
            .where(PatternValidation.pattern_id == pattern_id)
            .group_by(PatternValidation.result)
        ).all()
    )
    confirmations = int(counts.get(ValidationResult.CONFIRMED.value, 0))
    contradictions = int(counts.get(ValidationResult.CONTRADICTED.value, 0))
    before = str(session.scalar(select(Pattern.validation_status).where(Pattern.id == pattern_id)))
    after = before
    if before not in (ValidationStatus.REJECTED, ValidationStatus.CONTESTED):
        after = validation_status(
            confirmations, contradictions,
            min_confirmations=settings.validation_min_confirmations,
            contradiction_share=settings.contradiction_share,
        ).value  # fmt: skip
    session.execute(
        update(Pattern)
        .where(Pattern.id == pattern_id)
        .values(
            validation_count=confirmations,
            contradiction_count=contradictions,
            pattern_strength=pattern_strength(confirmations, contradictions),
            validation_status=after,
            usage_count=Pattern.usage_count + usage_added,
            updated_at=func.now(),
        )
    )
    return before, after
