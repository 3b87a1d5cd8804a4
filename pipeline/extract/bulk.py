"""Writing a whole batch's extractions in a few statements per project: the writer's fast path.

:func:`pipeline.extract.write.write_one` stores one interaction in about a dozen statements.
:func:`write_batch` stores a run of interactions of one project in a fixed number of statements,
whatever the run's length (docs/PERFORMANCE.md, "Writing patterns"):

1. the interaction rows locked, ``FOR UPDATE``, keeping those still waiting;
2. the project's active patterns whose normalised title any of the run's patterns or
   relationship ends names (one look-up serving both the title twins and the relationships);
3. every pattern in one multi-row ``INSERT ... ON CONFLICT DO NOTHING RETURNING``, ids chosen
   here, so that a pattern merged into a twin stored earlier in the same run can name it;
4. the edges the project already has, ``FOR UPDATE``, then the new ones in one flush;
5. the events in one ``INSERT``, the statuses in one ``executemany``.

Decisions follow the order :func:`write_one` would take them, one interaction after another: a
pattern's title twin may be a pattern stored earlier in the run, and a relationship resolves
against the project's patterns plus those earlier interactions of the run made active. Two
kinds of interaction are written by :func:`write_one` on their own, between runs: those with a
``supersedes`` or ``conflicts_with`` edge (they deactivate or re-rate earlier patterns, which
later decisions read). When the insert stores fewer rows than planned (a row of the same
extraction exists already, or the database normalises a title differently from
:func:`pipeline.text.normalize_title`), the run's savepoint is rolled back and its interactions
are written by :func:`write_one` one by one, so the outcome is always :func:`write_one`'s.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from sqlalchemy import Table, bindparam, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.orm import Session

from pipeline.db.engine import ProjectScope, rescope
from pipeline.db.models import Interaction, Pattern, PatternRelationship
from pipeline.db.status import WAITING_STATUSES, EventType, InteractionStatus
from pipeline.extract.relationships import ResolvedRelationship, resolve_relationships
from pipeline.extract.write import (
    ExtractionBatchResult,
    Provenance,
    Stored,
    Work,
    new_edge,
    pattern_row,
    write_one,
)
from pipeline.store.events import NewEvent, record
from pipeline.store.merge import accumulate_edge, merge_into
from pipeline.text import normalize_title

log = structlog.get_logger(__name__)

_INTERACTIONS = cast(Table, Interaction.__table__)
#: Relationship types whose writing reads and changes earlier patterns (write.py's
#: ``_supersede`` and ``_contradict``): such an interaction is written on its own.
_OWN_WRITE_TYPES = frozenset({"supersedes", "conflicts_with"})
#: Rows per multi-row INSERT (17 parameters a row, far under Postgres' 65,535).
_INSERT_ROWS = 1000
#: The columns of a new edge.
_EDGE = ("project_id", "source_pattern_id", "target_pattern_id", "relationship_type", "strength",
         "confidence", "evidence", "extraction_method", "extraction_model",
         "source_interaction_id", "validation_count")  # fmt: skip
#: Metadata to merge into an interaction's; ``None`` is SQL NULL (``metadata`` left as it is).
_EXTRA = bindparam("extra", type_=JSONB(none_as_null=True))


class _Conflict(Exception):
    """The run's insert stored fewer rows than planned: write it one interaction at a time."""


def write_batch(
    session: Session,
    works: Sequence[tuple[Work, uuid.UUID]],
    source: Provenance,
    out: ExtractionBatchResult,
) -> None:
    """Store a batch's outcomes, ``(work, project id)`` in interaction-id order, with the same
    result as :func:`pipeline.extract.write.write_one` on each in turn (module docstring).

    The caller holds the projects' writer locks (:func:`pipeline.store.events.lock_projects`)
    in ``session``'s transaction; each project is written in a savepoint of its own under its
    row-level security (the transaction's scope is left at the last project's). ``out`` gathers
    what was written. Raises what the database raises (the caller's transaction then fails as
    a whole, as with :func:`write_one`).
    """
    by_project: dict[uuid.UUID, list[Work]] = {}
    for work, project_id in works:
        by_project.setdefault(project_id, []).append(work)
    for project_id, group in by_project.items():
        with session.begin_nested():
            rescope(session, ProjectScope(project_id))
            _write_project(session, project_id, group, source, out)


def _write_project(
    session: Session,
    project_id: uuid.UUID,
    group: Sequence[Work],
    source: Provenance,
    out: ExtractionBatchResult,
) -> None:
    contents = dict(
        session.execute(
            select(Interaction.id, Interaction.content)
            .where(
                Interaction.id.in_([w.interaction_id for w in group]),
                Interaction.status.in_([s.value for s in WAITING_STATUSES]),
            )
            .order_by(Interaction.id)
            .with_for_update()
        ).all()
    )
    for run, own in _runs([w for w in group if w.interaction_id in contents]):
        if run:
            _write_run(session, project_id, run, contents, source, out)
        if own is not None:
            with session.begin_nested():
                write_one(session, own, source, out)


def _runs(works: Sequence[Work]) -> Iterator[tuple[list[Work], Work | None]]:
    """Split ``works`` into runs for the fast path, each followed by the work to write on its
    own (an interaction with a ``supersedes`` or ``conflicts_with`` edge), if any."""
    run: list[Work] = []
    for work in works:
        if work.result is not None and any(
            r.type in _OWN_WRITE_TYPES for r in work.result.relationships
        ):
            yield run, work
            run = []
        else:
            run.append(work)
    if run:
        yield run, None


def _write_run(
    session: Session,
    project_id: uuid.UUID,
    run: Sequence[Work],
    contents: Mapping[int, str],
    source: Provenance,
    out: ExtractionBatchResult,
) -> None:
    """One run in a savepoint; on a :class:`_Conflict` the savepoint is rolled back and each
    interaction goes through :func:`write_one`."""
    part = ExtractionBatchResult()
    savepoint = session.begin_nested()
    try:
        _write_run_rows(session, project_id, run, contents, source, part)
    except _Conflict:
        savepoint.rollback()
        log.info("bulk_write_fallback", project=str(project_id), interactions=len(run))
        for work in run:
            with session.begin_nested():
                write_one(session, work, source, out)
        return
    savepoint.commit()
    out.absorb(part)


@dataclass
class _Plan:
    """The run's decisions, taken in order before anything is written."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    #: Per interaction with patterns: its stored rows and resolved relationships.
    stored: dict[int, list[Stored]] = field(default_factory=dict)
    resolved: dict[int, list[ResolvedRelationship]] = field(default_factory=dict)
    unresolved: dict[int, list[str]] = field(default_factory=dict)
    types: dict[uuid.UUID, str] = field(default_factory=dict)


def _write_run_rows(
    session: Session,
    project_id: uuid.UUID,
    run: Sequence[Work],
    contents: Mapping[int, str],
    source: Provenance,
    out: ExtractionBatchResult,
) -> None:
    done = [w for w in run if w.result is not None]
    plan = _plan(session, project_id, done, contents, source)
    for start in range(0, len(plan.rows), _INSERT_ROWS):
        chunk = plan.rows[start : start + _INSERT_ROWS]
        insert_rows = insert(Pattern).values(chunk).on_conflict_do_nothing()
        if len(session.scalars(insert_rows.returning(Pattern.id)).all()) != len(chunk):
            raise _Conflict
    events: list[NewEvent] = []
    for work in done:
        stored = plan.stored.get(work.interaction_id, [])
        for s in stored:
            if s.canonical_id is None:
                payload = {"title": s.title, "type": plan.types[s.id],
                           "interaction_id": work.interaction_id}  # fmt: skip
                events.append(NewEvent(project_id, EventType.PATTERN_CREATED, payload, s.id))
            else:
                events += merge_into(session, canonical_id=s.canonical_id, merged_id=s.id,
                                     settings=source.settings, match="title")  # fmt: skip
        out.pattern_ids.extend(s.id for s in stored)
        out.merged += sum(1 for s in stored if s.canonical_id is not None)
        out.unresolved_relationships += len(plan.unresolved.get(work.interaction_id, []))
    out.relationships += _insert_edges(session, project_id, done, plan, source)
    record(session, events)
    _mark_failed(session, project_id, [w for w in run if w.result is None], out)
    _mark_extracted(session, done, plan, source.extraction_key)
    for work in done:
        out.extracted.append(work.interaction_id)
        if work.result is not None and work.result.trivial:
            out.trivial.append(work.interaction_id)


def _plan(
    session: Session,
    project_id: uuid.UUID,
    done: Sequence[Work],
    contents: Mapping[int, str],
    source: Provenance,
) -> _Plan:
    """Take :func:`write_one`'s decisions for the run in order: each pattern's row (active, or
    merged into its title twin), each interaction's relationships resolved (module docstring)."""
    results = [(w.interaction_id, w.result) for w in done if w.result and not w.result.trivial]
    wanted: set[str] = set()
    for _, res in results:
        wanted.update(normalize_title(p.title) for p in res.patterns)
        wanted.update(normalize_title(n) for r in res.relationships for n in (r.source, r.target))
    twins: dict[tuple[str, str], uuid.UUID] = {}
    titles: dict[str, uuid.UUID] = {}
    for pid, type_, normalized in _active_titles(session, project_id, wanted):
        twins.setdefault((type_, normalized), pid)
        titles.setdefault(normalized, pid)
    plan = _Plan()
    for iid, res in results:
        stored: list[Stored] = []
        seen: set[str] = set()
        for p in res.patterns:
            if p.title in seen:  # the extraction's unique key keeps the first of a title
                continue
            seen.add(p.title)
            key = (p.type, normalize_title(p.title))
            twin = twins.get(key)
            pid = uuid.uuid4()
            if twin is None:
                twins[key] = pid
            plan.rows.append(
                {"id": pid} | pattern_row(project_id, iid, contents[iid], p, source, twin)
            )
            stored.append(Stored(pid, p.title, twin))
            plan.types[pid] = p.type
        local = {normalize_title(s.title): s.serving_id for s in stored}
        names = {normalize_title(n) for r in res.relationships for n in (r.source, r.target)}
        earlier = {n: titles[n] for n in names - set(local) if n in titles}
        resolved, unresolved = resolve_relationships(
            res.relationships, local, earlier, source.settings.title_match_cutoff
        )
        for s in stored:
            if s.canonical_id is None:
                titles.setdefault(normalize_title(s.title), s.id)
        plan.stored[iid], plan.resolved[iid] = stored, resolved
        plan.unresolved[iid] = [reason for _, reason in unresolved]
    return plan


def _active_titles(
    session: Session, project_id: uuid.UUID, normalized: set[str]
) -> list[tuple[uuid.UUID, str, str]]:
    """``(id, type, normalised title)`` of the project's active patterns with a normalised
    title in ``normalized``, oldest first (the order :func:`pipeline.extract.relationships.
    project_titles` picks by)."""
    if not normalized:
        return []
    return [
        (r.id, r.type, r.normalized_title)
        for r in session.execute(
            select(Pattern.id, Pattern.type, Pattern.normalized_title)
            .where(
                Pattern.project_id == project_id,
                # Plain ``is_active`` proves the partial index's predicate (``IS true`` does
                # not): the index on active (project_id, normalized_title) of migration 0011
                # serves this instead of a scan of the table (docs/PERFORMANCE.md, "Scaling").
                Pattern.is_active,
                Pattern.normalized_title.in_(sorted(normalized)),
            )
            .order_by(Pattern.created_at, Pattern.id)
        )
    ]


def _insert_edges(
    session: Session, project_id: uuid.UUID, done: Sequence[Work], plan: _Plan,
    source: Provenance,
) -> int:  # fmt: skip
    """The run's resolved edges: one the project has (or the run made earlier) accumulates,
    the rest are inserted in one flush. Returns how many edges were new."""
    keys = [
        (r.source_id, r.target_id, r.relationship.type) for rs in plan.resolved.values() for r in rs
    ]
    if not keys:
        return 0
    edges: dict[tuple[uuid.UUID, uuid.UUID, str], PatternRelationship] = {
        (e.source_pattern_id, e.target_pattern_id, e.relationship_type): e
        for e in session.scalars(
            select(PatternRelationship)
            .where(
                tuple_(
                    PatternRelationship.source_pattern_id,
                    PatternRelationship.target_pattern_id,
                    PatternRelationship.relationship_type,
                ).in_(sorted(set(keys), key=str))
            )
            .with_for_update()
        )
    }
    new: list[PatternRelationship] = []  # transient: inserted below in one statement
    for work in done:
        for r in plan.resolved.get(work.interaction_id, []):
            key = (r.source_id, r.target_id, r.relationship.type)
            if key in edges:
                accumulate_edge(edges[key], r.relationship.strength, r.relationship.confidence, 1)
                continue
            edges[key] = new_edge(project_id, work.interaction_id, r, source)
            new.append(edges[key])
    session.flush()  # the accumulated existing edges, one executemany
    if new:
        session.execute(
            insert(PatternRelationship).values([{c: getattr(e, c) for c in _EDGE} for e in new])
        )
    return len(new)


def _mark_failed(
    session: Session, project_id: uuid.UUID, failed: Sequence[Work], out: ExtractionBatchResult
) -> None:
    """Status ``failed`` with each work's error, in one ``executemany``."""
    if not failed:
        return
    project = str(project_id)
    session.execute(
        update(_INTERACTIONS)
        .where(_INTERACTIONS.c.id == bindparam("iid"))
        .values(
            status=InteractionStatus.FAILED.value,
            last_error=bindparam("reason"),
            processed_at=func.now(),
            updated_at=func.now(),
        ),
        [{"iid": w.interaction_id, "reason": w.error} for w in failed],
    )
    for w in failed:
        out.failed[w.interaction_id] = w.error or "unknown error"
        log.warning("interaction_failed", interaction_id=w.interaction_id, project=project,
                    attempts=w.attempt, error=w.error)  # fmt: skip


def _mark_extracted(session: Session, done: Sequence[Work], plan: _Plan, key: str) -> None:
    """Status ``extracted`` with the extraction key and ``trivial``; unresolved relationships'
    reasons merged into the metadata (left as it is when there are none), in one
    ``executemany``."""
    if not done:
        return
    metadata = _INTERACTIONS.c.metadata
    session.execute(
        update(_INTERACTIONS)
        .where(_INTERACTIONS.c.id == bindparam("iid"))
        .values(
            status=InteractionStatus.EXTRACTED.value,
            last_error=None,
            extraction_key=key,
            trivial=bindparam("is_trivial"),
            metadata=func.coalesce(metadata.op("||")(_EXTRA), metadata),
            processed_at=func.now(),
            updated_at=func.now(),
        ),
        [
            {
                "iid": w.interaction_id,
                "is_trivial": bool(w.result and w.result.trivial),
                "extra": {"unresolved_relationships": unresolved}
                if (unresolved := plan.unresolved.get(w.interaction_id))
                else None,
            }
            for w in done
        ],
    )
