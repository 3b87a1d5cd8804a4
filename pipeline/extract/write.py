"""Writing one interaction's extraction: its patterns (merged into their twin when the project
has the idea already), relationships and events, then its status.

Runs inside the batch's transaction, one savepoint per interaction (a failure rolls back that
interaction only), under the interaction's project's row-level security and holding the
project's writer lock. A trivial result (no reusable lesson) marks the interaction
``extracted`` and ``trivial``, with no patterns; each pattern is stored with its label-free
signals (:mod:`pipeline.quality.signals`). The interaction row is locked first and written only
while it is still waiting (``received``/``queued``), so a task that runs twice stores one set
of rows; the patterns' unique key ``(source_interaction_id, extraction_key, title)`` guards the
same from the other side.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import cast

import structlog
from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, Pattern, PatternRelationship, PatternValidation
from pipeline.db.status import (
    WAITING_STATUSES,
    EventType,
    ExtractionMethod,
    InteractionStatus,
    ValidationResult,
    ValidationType,
)
from pipeline.extract.relationships import (
    ResolvedRelationship,
    project_titles,
    resolve_relationships,
)
from pipeline.extract.schemas import ExtractedPattern, ExtractionResult
from pipeline.quality.signals import is_grounded, is_title_copy
from pipeline.settings import Settings
from pipeline.store.events import NewEvent, record
from pipeline.store.lifecycle import pattern_strength
from pipeline.store.merge import accumulate_edge, merge_into, refresh, status_events, title_twin
from pipeline.text import normalize_title

log = structlog.get_logger(__name__)

#: The interactions table, for Core statements (executemany with our own WHERE).
_INTERACTIONS = cast(Table, Interaction.__table__)


@dataclass
class ExtractionBatchResult:
    """What one extraction batch did. ``pattern_ids`` are the newly stored patterns.

    ``deferred`` (id → reason) were not done by this engine and are still waiting: the budget
    refused them, Claude stayed unavailable, or (``keep_failures``) the model failed them; the
    caller routes them elsewhere. ``failed`` ones are terminal. ``llm_calls`` counts requests
    that reached the engine; ``cache_hits`` those answered from the response cache."""

    extracted: list[int] = field(default_factory=list)
    #: Of ``extracted``, those the model called trivial (no patterns): ``skipped_trivial``.
    trivial: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    pattern_ids: list[uuid.UUID] = field(default_factory=list)
    relationships: int = 0
    unresolved_relationships: int = 0
    deferred: dict[int, str] = field(default_factory=dict)
    merged: int = 0
    llm_calls: int = 0
    cache_hits: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    generate_seconds: float = 0.0

    def absorb(self, part: ExtractionBatchResult) -> None:
        """Add what ``part`` (a piece of the same batch) did to this result."""
        for f in fields(self):
            mine, theirs = getattr(self, f.name), getattr(part, f.name)
            if isinstance(mine, list):
                mine.extend(theirs)
            elif isinstance(mine, dict):
                mine.update(theirs)
            else:
                setattr(self, f.name, mine + theirs)


@dataclass(frozen=True)
class Work:
    """One interaction's outcome, ready to write: a result, or the error it failed with."""

    interaction_id: int
    attempt: int
    result: ExtractionResult | None
    error: str | None


@dataclass(frozen=True)
class Provenance:
    """Where a batch's results come from (the idempotency key, the model and the method), and
    the settings merges and relationship resolution follow."""

    extraction_key: str
    model_name: str
    method: ExtractionMethod
    settings: Settings


@dataclass(frozen=True)
class Stored:
    """A pattern row this write inserted: active, or merged into its title twin
    (``canonical_id``)."""

    id: uuid.UUID
    title: str
    canonical_id: uuid.UUID | None = None

    @property
    def serving_id(self) -> uuid.UUID:
        """The active pattern that stands for it: itself, or its canonical twin."""
        return self.canonical_id or self.id


def write_one(session: Session, work: Work, source: Provenance, out: ExtractionBatchResult) -> None:
    """Store one interaction's result (or failure) under a row lock, unless another run already
    finished it; ``out`` gathers what was written. The caller holds the project's writer lock
    (:func:`pipeline.store.events.lock_projects`) and has scoped the transaction to the
    interaction's project."""
    inter = session.execute(
        select(Interaction).where(Interaction.id == work.interaction_id).with_for_update()
    ).scalar_one()
    if inter.status not in WAITING_STATUSES:
        return
    if work.result is None:
        _fail(inter, work, out)
        return
    if work.result.trivial:
        _mark_extracted(session, inter.id, source.extraction_key, [], trivial=True)
        out.extracted.append(inter.id)
        out.trivial.append(inter.id)
        return
    stored, events = _insert_patterns(session, inter, work.result, source)
    local = {normalize_title(p.title): p.serving_id for p in stored}
    names = [n for r in work.result.relationships for n in (r.source, r.target)]
    earlier = project_titles(
        session, inter.project_id, {normalize_title(n) for n in names} - set(local)
    )
    resolved, unresolved = resolve_relationships(
        work.result.relationships, local, earlier, source.settings.title_match_cutoff
    )
    out.relationships += _insert_relationships(session, inter, resolved, source)
    events += _supersede(session, inter, resolved)
    events += _contradict(session, inter, resolved, set(local.values()), source.settings)
    out.unresolved_relationships += len(unresolved)
    record(session, events)
    _mark_extracted(session, inter.id, source.extraction_key, [r for _, r in unresolved])
    out.extracted.append(inter.id)
    out.pattern_ids.extend(p.id for p in stored)
    out.merged += sum(1 for p in stored if p.canonical_id is not None)


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
) -> tuple[list[Stored], list[NewEvent]]:
    """Insert the result's patterns: active, or, when the project has an active twin of the same
    type and normalised title, inactive and merged into it (:func:`pipeline.store.merge.
    merge_into`). Returns the rows this call stored and the events to record."""
    stored: list[Stored] = []
    events: list[NewEvent] = []
    for p in result.patterns:
        twin = title_twin(session, inter.project_id, p.type, p.title)
        row = pattern_row(inter.project_id, inter.id, inter.content, p, source, twin)
        pid = session.scalar(
            insert(Pattern).values(row).on_conflict_do_nothing().returning(Pattern.id)
        )
        if pid is None:  # this extraction's row exists already (a re-run)
            continue
        stored.append(Stored(pid, p.title, twin))
        if twin is None:
            payload = {"title": p.title, "type": p.type, "interaction_id": inter.id}
            events.append(NewEvent(inter.project_id, EventType.PATTERN_CREATED, payload, pid))
        else:
            events += merge_into(
                session, canonical_id=twin, merged_id=pid, settings=source.settings, match="title"
            )
    return stored, events


def pattern_row(
    project_id: uuid.UUID,
    interaction_id: int,
    content: str,
    p: ExtractedPattern,
    source: Provenance,
    twin: uuid.UUID | None,
) -> dict[str, object]:
    """The ``patterns`` row of extracted pattern ``p`` of an interaction (its text ``content``,
    for the label-free signals): active, or inactive and merged into ``twin``. No ``id``: the
    database draws one unless the caller adds it."""
    return {
        "project_id": project_id,
        "type": p.type,
        "title": p.title,
        "content": {"description": p.description, "evidence": p.evidence},
        "confidence": p.confidence,
        "extraction_method": source.method.value,
        "extraction_model": source.model_name,
        "extraction_confidence": p.confidence,
        "extraction_key": source.extraction_key,
        "evidence_grounded": is_grounded(p.evidence, content),
        "title_copy": is_title_copy(p.title, content),
        "source_interaction_id": interaction_id,
        "pattern_strength": pattern_strength(0, 0),
        "is_active": twin is None,
        "superseded_by": twin,
    }


def _insert_relationships(
    session: Session,
    inter: Interaction,
    resolved: Sequence[ResolvedRelationship],
    source: Provenance,
) -> int:
    """Insert the resolved edges; an edge the project already has accumulates instead
    (strength by noisy-OR, one more confirmation: :func:`pipeline.store.merge.noisy_or`).
    Returns how many edges were new."""
    new = 0
    for r in resolved:
        existing = session.execute(
            select(PatternRelationship)
            .where(
                PatternRelationship.source_pattern_id == r.source_id,
                PatternRelationship.target_pattern_id == r.target_id,
                PatternRelationship.relationship_type == r.relationship.type,
            )
            .with_for_update()
        ).scalar_one_or_none()
        if existing is not None:
            accumulate_edge(existing, r.relationship.strength, r.relationship.confidence, 1)
            continue
        session.add(new_edge(inter.project_id, inter.id, r, source))
        new += 1
    session.flush()
    return new


def new_edge(
    project_id: uuid.UUID, interaction_id: int, r: ResolvedRelationship, source: Provenance
) -> PatternRelationship:
    """A new (transient) edge for resolved relationship ``r`` of an interaction, seen once."""
    return PatternRelationship(
        project_id=project_id, source_pattern_id=r.source_id,
        target_pattern_id=r.target_id, relationship_type=r.relationship.type,
        strength=r.relationship.strength, confidence=r.relationship.confidence,
        evidence={"source_title": r.relationship.source, "target_title": r.relationship.target},
        extraction_method=source.method.value, extraction_model=source.model_name,
        source_interaction_id=interaction_id, validation_count=0,
    )  # fmt: skip


def _supersede(
    session: Session, inter: Interaction, resolved: Sequence[ResolvedRelationship]
) -> list[NewEvent]:
    """A ``supersedes`` edge from a newer pattern to an older one replaces the older: it becomes
    inactive, ``superseded_by`` the newer, which ``supersedes`` it."""
    events: list[NewEvent] = []
    for r in resolved:
        if r.relationship.type != "supersedes":
            continue
        newer, older = (
            session.get(Pattern, r.source_id, with_for_update=True),
            session.get(Pattern, r.target_id, with_for_update=True),
        )
        if newer is None or older is None or not (newer.is_active and older.is_active):
            continue
        if (older.created_at, str(older.id)) >= (newer.created_at, str(newer.id)):
            continue
        older.is_active, older.superseded_by = False, newer.id
        newer.supersedes = older.id
        payload = {"superseded_by": str(newer.id), "title": older.title}
        events.append(NewEvent(inter.project_id, EventType.PATTERN_SUPERSEDED, payload, older.id))
    session.flush()
    return events


def _contradict(
    session: Session,
    inter: Interaction,
    resolved: Sequence[ResolvedRelationship],
    own: set[uuid.UUID],
    settings: Settings,
) -> list[NewEvent]:
    """A ``conflicts_with`` edge from this interaction's pattern to an earlier active pattern of
    the project (not one this interaction stands for) is evidence against the earlier one: it
    gains a ``contradicted`` validation of type ``conflict`` (once per conflicting pattern), and
    its counts, strength and status are recomputed (:func:`pipeline.store.merge.refresh`), so
    enough conflicts turn it ``contradicted``. Returns the status events."""
    contradicted: list[uuid.UUID] = []
    for r in resolved:
        if r.relationship.type != "conflicts_with" or r.target_id in own:
            continue
        target = session.get(Pattern, r.target_id, with_for_update=True)
        if target is None or not target.is_active:
            continue
        added = session.scalar(
            insert(PatternValidation)
            .values(
                project_id=inter.project_id, pattern_id=target.id,
                validating_pattern_id=r.source_id, validator="conflict-edge",
                validation_type=ValidationType.CONFLICT.value,
                result=ValidationResult.CONTRADICTED.value,
                confidence=r.relationship.confidence, interaction_id=inter.id,
                evidence={"source_title": r.relationship.source, "target_title": target.title},
            )
            .on_conflict_do_nothing(constraint="uq_pattern_validations_pair")
            .returning(PatternValidation.id)
        )  # fmt: skip
        if added is not None and target.id not in contradicted:
            contradicted.append(target.id)
    events: list[NewEvent] = []
    for pattern_id in contradicted:  # once per pattern, however many edges contradict it
        before, after = refresh(session, pattern_id, settings)
        events += status_events(inter.project_id, pattern_id, before, after)
    return events


def _mark_extracted(
    session: Session, interaction_id: int, key: str, unresolved: Sequence[str],
    *, trivial: bool = False,
) -> None:  # fmt: skip
    """Status ``extracted`` with the extraction key and the model's ``trivial`` verdict;
    unresolved relationships' reasons go to the interaction's metadata."""
    now = func.now()
    session.execute(
        update(Interaction)
        .where(Interaction.id == interaction_id)
        .values(
            status=InteractionStatus.EXTRACTED.value,
            last_error=None,
            extraction_key=key,
            trivial=trivial,
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
    with db.session(ALL_PROJECTS) as session:
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
