"""Writing one interaction's extraction: its patterns, relationships and events, then its status.

Runs inside the batch's transaction, one savepoint per interaction (a failure rolls back that
interaction only). The interaction row is locked first and written only while it is still waiting
(``received``/``queued``), so a task that runs twice stores one set of rows; the patterns' unique
key ``(source_interaction_id, extraction_key, title)`` guards the same from the other side.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import structlog
from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.engine import Database
from pipeline.db.models import Interaction, Pattern, PatternEvent, PatternRelationship
from pipeline.db.status import WAITING_STATUSES, ExtractionMethod, InteractionStatus
from pipeline.extract.relationships import (
    ResolvedRelationship,
    project_titles,
    resolve_relationships,
)
from pipeline.extract.schemas import ExtractionResult
from pipeline.text import normalize_title

log = structlog.get_logger(__name__)

#: The interactions table, for Core statements (executemany with our own WHERE).
_INTERACTIONS = cast(Table, Interaction.__table__)


@dataclass
class ExtractionBatchResult:
    """What one extraction batch did. ``pattern_ids`` are the newly stored patterns.

    ``deferred`` (id → reason) were not done by this engine and are still waiting: the budget
    refused them, Claude stayed unavailable, or (``keep_failures``) the model failed them; the
    caller routes them elsewhere. ``failed`` ones are terminal."""

    extracted: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    pattern_ids: list[uuid.UUID] = field(default_factory=list)
    relationships: int = 0
    unresolved_relationships: int = 0
    deferred: dict[int, str] = field(default_factory=dict)
    llm_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    generate_seconds: float = 0.0


@dataclass(frozen=True)
class Work:
    """One interaction's outcome, ready to write: a result, or the error it failed with."""

    interaction_id: int
    attempt: int
    result: ExtractionResult | None
    error: str | None


@dataclass(frozen=True)
class Provenance:
    """Where a batch's results come from: the idempotency key, the model and the method."""

    extraction_key: str
    model_name: str
    method: ExtractionMethod
    title_match_cutoff: float


def write_one(session: Session, work: Work, source: Provenance, out: ExtractionBatchResult) -> None:
    """Store one interaction's result (or failure) under a row lock, unless another run already
    finished it; ``out`` gathers what was written."""
    inter = session.execute(
        select(Interaction).where(Interaction.id == work.interaction_id).with_for_update()
    ).scalar_one()
    if inter.status not in WAITING_STATUSES:
        return
    if work.result is None:
        _fail(inter, work, out)
        return
    stored = _insert_patterns(session, inter, work.result, source)
    local = {normalize_title(title): pid for pid, title in stored}
    names = [n for r in work.result.relationships for n in (r.source, r.target)]
    earlier = project_titles(
        session, inter.project_id, {normalize_title(n) for n in names} - set(local)
    )
    resolved, unresolved = resolve_relationships(
        work.result.relationships, local, earlier, source.title_match_cutoff
    )
    out.relationships += _insert_relationships(session, inter, resolved, source)
    out.unresolved_relationships += len(unresolved)
    _insert_events(session, inter, stored)
    _mark_extracted(session, inter.id, source.extraction_key, [r for _, r in unresolved])
    out.extracted.append(inter.id)
    out.pattern_ids.extend(pid for pid, _ in stored)


def _fail(inter: Interaction, work: Work, out: ExtractionBatchResult) -> None:
    now = func.now()
    inter.status = InteractionStatus.FAILED.value
    inter.last_error = work.error
    inter.processed_at = now  # type: ignore[assignment]
    inter.updated_at = now  # type: ignore[assignment]
    out.failed[inter.id] = work.error or "unknown error"
    log.warning(
        "interaction_failed",
        interaction_id=inter.id,
        project=str(inter.project_id),
        attempts=work.attempt,
        error=work.error,
    )


def _insert_patterns(
    session: Session, inter: Interaction, result: ExtractionResult, source: Provenance
) -> list[tuple[uuid.UUID, str]]:
    """Insert the result's patterns; returns ``(id, title)`` of the ones this call stored."""
    rows = [
        {
            "project_id": inter.project_id,
            "type": p.type,
            "title": p.title,
            "content": {"description": p.description, "evidence": p.evidence},
            "confidence": p.confidence,
            "extraction_method": source.method.value,
            "extraction_model": source.model_name,
            "extraction_confidence": p.confidence,
            "extraction_key": source.extraction_key,
            "source_interaction_id": inter.id,
        }
        for p in result.patterns
    ]
    return [
        (pid, title)
        for pid, title in session.execute(
            insert(Pattern)
            .values(rows)
            .on_conflict_do_nothing(constraint="uq_patterns_extraction")
            .returning(Pattern.id, Pattern.title)
        ).all()
    ]


def _insert_relationships(
    session: Session,
    inter: Interaction,
    resolved: Sequence[ResolvedRelationship],
    source: Provenance,
) -> int:
    """Insert the resolved edges (a repeated edge is left as it is); returns how many were new."""
    if not resolved:
        return 0
    rows = [
        {
            "project_id": inter.project_id,
            "source_pattern_id": r.source_id,
            "target_pattern_id": r.target_id,
            "relationship_type": r.relationship.type,
            "strength": r.relationship.strength,
            "confidence": r.relationship.confidence,
            "evidence": {
                "source_title": r.relationship.source,
                "target_title": r.relationship.target,
            },
            "extraction_method": source.method.value,
            "extraction_model": source.model_name,
            "source_interaction_id": inter.id,
        }
        for r in resolved
    ]
    edges = session.execute(
        insert(PatternRelationship)
        .values(rows)
        .on_conflict_do_nothing(constraint="uq_pattern_relationships_edge")
        .returning(PatternRelationship.id)
    ).all()
    return len(edges)


def _insert_events(
    session: Session, inter: Interaction, stored: Sequence[tuple[uuid.UUID, str]]
) -> None:
    """A ``created`` event per stored pattern (the live feed reads them)."""
    if stored:
        session.execute(
            insert(PatternEvent).values(
                [
                    {
                        "project_id": inter.project_id,
                        "pattern_id": pid,
                        "event_type": "created",
                        "payload": {"title": title, "interaction_id": inter.id},
                    }
                    for pid, title in stored
                ]
            )
        )


def _mark_extracted(
    session: Session, interaction_id: int, key: str, unresolved: Sequence[str]
) -> None:
    """Status ``extracted`` with the extraction key; unresolved relationships' reasons go to the
    interaction's metadata."""
    now = func.now()
    session.execute(
        update(Interaction)
        .where(Interaction.id == interaction_id)
        .values(
            status=InteractionStatus.EXTRACTED.value,
            last_error=None,
            extraction_key=key,
            metadata_=Interaction.metadata_.op("||")({"unresolved_relationships": list(unresolved)})
            if unresolved
            else Interaction.metadata_,
            processed_at=now,
            updated_at=now,
        )
    )


def mark_failed(db: Database, failures: Mapping[int, str]) -> None:
    """Mark still-waiting interactions ``failed`` with their reasons (id → reason), in one
    statement; ones another run finished meanwhile are left alone."""
    if not failures:
        return
    with db.session() as session:
        session.execute(
            # Core table: an executemany UPDATE with our own WHERE (the ORM form would be a
            # bulk update by primary key).
            update(_INTERACTIONS)
            .where(
                _INTERACTIONS.c.id == bindparam("iid"),
                # Not IN (...): expanding parameters cannot go with executemany.
                or_(*(_INTERACTIONS.c.status == w.value for w in WAITING_STATUSES)),
            )
            .values(
                status=InteractionStatus.FAILED.value,
                last_error=bindparam("reason"),
                processed_at=func.now(),
                updated_at=func.now(),
            ),
            [{"iid": iid, "reason": reason} for iid, reason in sorted(failures.items())],
        )
