"""Pattern extraction: many interactions, one batched model call, idempotent writes.

Pure parts, tested with plain values: :func:`parse_output` (text → validated result or
:class:`~pipeline.errors.ModelOutputError`), :func:`retry_decision` (what to do after a bad output)
and :func:`resolve_relationships` (model titles → pattern ids). :func:`extract_batch` ties them to
an engine and the database.

Idempotency: results are keyed on ``(interaction, prompt version, schema version, model)``
(:func:`extraction_key`); an interaction is written under a row lock only while it is not yet in a
terminal status, so a task that runs twice leaves the rows of one run.
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast

import structlog
from sqlalchemy import Table, bindparam, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.attempts import RetryDecision, generate_with_retries, one_retry
from pipeline.db.engine import Database
from pipeline.db.models import (
    Interaction,
    InteractionStatus,
    LLMCall,
    Pattern,
    PatternEvent,
    PatternRelationship,
)
from pipeline.errors import ModelOutputError
from pipeline.llm.base import GenerationRequest, StructuredLLM
from pipeline.prompts import EXAMPLE_TITLES, PROMPT_VERSION, extraction_messages
from pipeline.routing import priority_of
from pipeline.schemas import (
    SCHEMA_VERSION,
    ExtractedRelationship,
    ExtractionResult,
    extraction_json_schema,
    validate_output,
)
from pipeline.settings import Settings
from pipeline.text import normalize_title

log = structlog.get_logger(__name__)

#: The interactions table, for Core statements (executemany with our own WHERE).
_INTERACTIONS = cast(Table, Interaction.__table__)

TASK_TYPE = "pattern_extraction"
#: Attempts per interaction: the first, and one retry with a larger token limit.
MAX_ATTEMPTS = 2


def extraction_key(model_name: str) -> str:
    """The idempotency key of an extraction result, without the interaction id:
    ``p<prompt version>:s<schema version>:<model>``."""
    return f"p{PROMPT_VERSION}:s{SCHEMA_VERSION}:{model_name}"


def parse_output(text: str, finish_reason: str) -> ExtractionResult:
    """Validate a model's output against :class:`ExtractionResult` and clean it.

    Cleaning: patterns that repeat a title of the prompt's example are dropped (the model echoed
    it); later patterns with the same normalised title as an earlier one are dropped.

    Raises:
        ModelOutputError: generation stopped at the token limit (``truncated=True``), the text is
            not valid JSON of the schema, or nothing is left after cleaning.
    """
    result = validate_output(ExtractionResult, text, finish_reason)
    seen: set[str] = set()
    kept = []
    for pattern in result.patterns:
        key = normalize_title(pattern.title)
        if key in EXAMPLE_TITLES or key in seen or not key:
            continue
        seen.add(key)
        kept.append(pattern)
    if not kept:
        raise ModelOutputError("output only repeated the prompt's example or empty titles")
    return ExtractionResult(patterns=kept, relationships=result.relationships)


def retry_decision(attempt: int, error: ModelOutputError, settings: Settings) -> RetryDecision:
    """Decide what follows a bad output on ``attempt`` (1-based).

    The first failure is retried once with ``extract_retry_max_tokens``; since greedy decoding
    would repeat the same invalid text, the retry samples at ``extract_retry_temperature`` (with
    a fixed seed, so it stays repeatable). After :data:`MAX_ATTEMPTS` the interaction fails with
    the error's reason.
    """
    return one_retry(
        attempt,
        error,
        max_tokens=max(settings.extract_retry_max_tokens, settings.extract_max_tokens),
        temperature=settings.extract_retry_temperature,
        max_attempts=MAX_ATTEMPTS,
    )


@dataclass(frozen=True)
class ResolvedRelationship:
    """A relationship whose ends are pattern ids."""

    source_id: uuid.UUID
    target_id: uuid.UUID
    relationship: ExtractedRelationship


def _match(
    name: str, local: Mapping[str, uuid.UUID], project: Mapping[str, uuid.UUID], cutoff: float
) -> uuid.UUID | None:
    key = normalize_title(name)
    if key in local:
        return local[key]
    if key in project:
        return project[key]
    close = difflib.get_close_matches(key, list(local), n=1, cutoff=cutoff)
    return local[close[0]] if close else None


def resolve_relationships(
    relationships: Sequence[ExtractedRelationship],
    local: Mapping[str, uuid.UUID],
    project: Mapping[str, uuid.UUID],
    cutoff: float,
) -> tuple[list[ResolvedRelationship], list[tuple[ExtractedRelationship, str]]]:
    """Resolve each relationship's source and target titles to pattern ids.

    A title matches, in order: a pattern of the same output by normalised title, an earlier
    pattern of the project by normalised title, a pattern of the same output whose normalised
    title is at least ``cutoff`` similar (difflib ratio). Self-loops and duplicates are dropped.

    Args:
        local: normalised title → id of the patterns of this output.
        project: normalised title → id of the project's earlier patterns.

    Returns:
        ``(resolved, unresolved)``; each unresolved item carries the reason.
    """
    resolved: list[ResolvedRelationship] = []
    unresolved: list[tuple[ExtractedRelationship, str]] = []
    seen: set[tuple[uuid.UUID, uuid.UUID, str]] = set()
    for rel in relationships:
        src = _match(rel.source, local, project, cutoff)
        tgt = _match(rel.target, local, project, cutoff)
        if src is None or tgt is None:
            missing = rel.source if src is None else rel.target
            unresolved.append((rel, f"no pattern titled {missing!r}"))
        elif src == tgt:
            unresolved.append((rel, "source and target are the same pattern"))
        elif (src, tgt, rel.type) in seen:
            unresolved.append((rel, "duplicate"))
        else:
            seen.add((src, tgt, rel.type))
            resolved.append(ResolvedRelationship(src, tgt, rel))
    return resolved, unresolved


@dataclass
class ExtractionBatchResult:
    """What one :func:`extract_batch` call did. ``pattern_ids`` are the newly stored patterns.

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
class _Work:
    """One interaction's outcome, ready to write."""

    interaction: Interaction
    attempt: int
    result: ExtractionResult | None
    error: str | None


def extraction_method(engine: StructuredLLM) -> str:
    """``patterns.extraction_method`` for an engine: ``commercial_llm`` for Claude, else
    ``local_llm``."""
    return "commercial_llm" if engine.provider == "claude" else "local_llm"


def extract_batch(
    *,
    db: Database,
    engine: StructuredLLM,
    settings: Settings,
    interaction_ids: Sequence[int],
    route_reasons: Mapping[int, str] | None = None,
    keep_failures: bool = False,
) -> ExtractionBatchResult:
    """Extract patterns and relationships for a batch of interactions with one engine call per
    attempt, and store them.

    Interactions already in a terminal status are left alone. A bad output is retried once
    (:func:`retry_decision`); an interaction whose output stays bad is marked ``failed`` with the
    reason (with ``keep_failures``, left waiting and listed in ``deferred`` instead, for the
    ``local_fallback`` strategy to hand to Claude), and the rest of the batch goes on. An output
    the engine ``deferred`` (budget, provider unavailable) is not retried here: it is listed in
    ``deferred``. Every request is recorded in ``llm_calls``, with ``route_reasons[id]`` as its
    route reason when given.

    Returns:
        What was extracted, failed and stored; ``pattern_ids`` lists the new patterns to embed.

    Raises:
        RetryableError / PermanentError: from the engine, when nothing could be generated.
    """
    out = ExtractionBatchResult()
    key = extraction_key(engine.model_name)
    with db.session() as session:
        rows = session.scalars(
            select(Interaction)
            .where(
                Interaction.id.in_(list(interaction_ids)),
                Interaction.status.in_(
                    [InteractionStatus.RECEIVED.value, InteractionStatus.QUEUED.value]
                ),
            )
            .order_by(Interaction.id)
        ).all()
    if not rows:
        return out
    schema = extraction_json_schema()
    by_id = {r.id: r for r in rows}

    def request(iid: int, retry: RetryDecision | None) -> GenerationRequest:
        interaction = by_id[iid]
        return GenerationRequest(
            messages=extraction_messages(
                interaction.content, max_chars=settings.extract_input_chars
            ),
            json_schema=schema,
            max_tokens=retry.max_tokens if retry else settings.extract_max_tokens,
            temperature=retry.temperature if retry else 0.0,
            seed=settings.seed + iid,
            task_type=TASK_TYPE,
            interaction_id=iid,
            priority=priority_of(interaction.metadata_).value,
        )

    attempts = generate_with_retries(
        engine,
        list(by_id),
        request=request,
        parse=parse_output,
        decide=lambda attempt, exc: retry_decision(attempt, exc, settings),
        task_type=TASK_TYPE,
        route_reasons=route_reasons,
    )
    out.llm_calls = len(attempts.calls)
    out.tokens_in, out.tokens_out = attempts.tokens_in, attempts.tokens_out
    out.generate_seconds = attempts.seconds

    method = extraction_method(engine)
    with db.session() as session:
        session.execute(insert(LLMCall), attempts.calls)
        for row in rows:
            result, failure = attempts.results.get(row.id), attempts.failed.get(row.id)
            if row.id in attempts.deferred or (keep_failures and result is None):
                out.deferred[row.id] = attempts.deferred.get(row.id) or failure or "deferred"
                continue
            work = _Work(row, attempts.attempts[row.id], result, failure)
            with session.begin_nested():
                _write_one(session, work, key, engine.model_name, method, settings, out)
    log.info(
        "extract_batch_done",
        provider=engine.provider,
        batch=len(rows),
        extracted=len(out.extracted),
        failed=len(out.failed),
        deferred=len(out.deferred),
        patterns=len(out.pattern_ids),
        relationships=out.relationships,
        tokens_out=out.tokens_out,
        seconds=round(out.generate_seconds, 2),
    )
    return out


def _write_one(
    session: Session,
    work: _Work,
    key: str,
    model_name: str,
    method: str,
    settings: Settings,
    out: ExtractionBatchResult,
) -> None:
    """Store one interaction's result under a row lock, unless another run already did."""
    inter = session.execute(
        select(Interaction).where(Interaction.id == work.interaction.id).with_for_update()
    ).scalar_one()
    if inter.status not in (InteractionStatus.RECEIVED.value, InteractionStatus.QUEUED.value):
        return
    now = func.now()
    if work.result is None:
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
        return
    rows = [
        {
            "project_id": inter.project_id,
            "type": p.type,
            "title": p.title,
            "content": {"description": p.description, "evidence": p.evidence},
            "confidence": p.confidence,
            "extraction_method": method,
            "extraction_model": model_name,
            "extraction_confidence": p.confidence,
            "extraction_key": key,
            "source_interaction_id": inter.id,
        }
        for p in work.result.patterns
    ]
    stored = session.execute(
        insert(Pattern)
        .values(rows)
        .on_conflict_do_nothing(constraint="uq_patterns_extraction")
        .returning(Pattern.id, Pattern.title)
    ).all()
    local = {normalize_title(title): pid for pid, title in stored}
    names = [n for r in work.result.relationships for n in (r.source, r.target)]
    wanted = {normalize_title(n) for n in names} - set(local)
    project_titles: dict[str, uuid.UUID] = {}
    if wanted:
        # The same normalisation as pipeline.text.normalize_title, in SQL: lower-case, runs of
        # non-word characters to one space, trimmed.
        normalized = func.btrim(func.regexp_replace(func.lower(Pattern.title), r"[^\w]+", " ", "g"))
        for pid, title in session.execute(
            select(Pattern.id, Pattern.title)
            .where(
                Pattern.project_id == inter.project_id,
                Pattern.is_active.is_(True),
                normalized.in_(sorted(wanted)),
            )
            .order_by(Pattern.created_at, Pattern.id)
        ).all():
            project_titles.setdefault(normalize_title(title), pid)
    resolved, unresolved = resolve_relationships(
        work.result.relationships, local, project_titles, settings.title_match_cutoff
    )
    if resolved:
        edges = session.execute(
            insert(PatternRelationship)
            .values(
                [
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
                        "extraction_method": method,
                        "extraction_model": model_name,
                        "source_interaction_id": inter.id,
                    }
                    for r in resolved
                ]
            )
            .on_conflict_do_nothing(constraint="uq_pattern_relationships_edge")
            .returning(PatternRelationship.id)
        ).all()
        out.relationships += len(edges)
    out.unresolved_relationships += len(unresolved)
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
    session.execute(
        update(Interaction)
        .where(Interaction.id == inter.id)
        .values(
            status=InteractionStatus.EXTRACTED.value,
            last_error=None,
            extraction_key=key,
            metadata_=Interaction.metadata_.op("||")(
                {"unresolved_relationships": [reason for _, reason in unresolved]}
            )
            if unresolved
            else Interaction.metadata_,
            processed_at=now,
            updated_at=now,
        )
    )
    out.extracted.append(inter.id)
    out.pattern_ids.extend(pid for pid, _ in stored)


def mark_failed(db: Database, failures: Mapping[int, str]) -> None:
    """Mark still-waiting interactions ``failed`` with their reasons (id → reason), in one
    statement; ones another run finished meanwhile are left alone."""
    if not failures:
        return
    waiting = [InteractionStatus.RECEIVED.value, InteractionStatus.QUEUED.value]
    with db.session() as session:
        session.execute(
            # Core table: an executemany UPDATE with our own WHERE (the ORM form would be a
            # bulk update by primary key).
            update(_INTERACTIONS)
            .where(
                _INTERACTIONS.c.id == bindparam("iid"),
                # Not IN (...): expanding parameters cannot go with executemany.
                or_(*(_INTERACTIONS.c.status == w for w in waiting)),
            )
            .values(
                status=InteractionStatus.FAILED.value,
                last_error=bindparam("reason"),
                processed_at=func.now(),
                updated_at=func.now(),
            ),
            [{"iid": iid, "reason": reason} for iid, reason in sorted(failures.items())],
        )
