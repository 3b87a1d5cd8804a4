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
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

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
from pipeline.llm.base import Generation, GenerationRequest, StructuredLLM
from pipeline.prompts import EXAMPLE_TITLES, PROMPT_VERSION, extraction_messages
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


@dataclass(frozen=True)
class RetryDecision:
    """Whether to try an interaction again, and with which token limit and temperature."""

    retry: bool
    max_tokens: int = 0
    temperature: float = 0.0
    reason: str = ""


def retry_decision(attempt: int, error: ModelOutputError, settings: Settings) -> RetryDecision:
    """Decide what follows a bad output on ``attempt`` (1-based).

    The first failure is retried once with ``extract_retry_max_tokens``; since greedy decoding
    would repeat the same invalid text, the retry samples at ``extract_retry_temperature`` (with
    a fixed seed, so it stays repeatable). After :data:`MAX_ATTEMPTS` the interaction fails with
    the error's reason.
    """
    if attempt >= MAX_ATTEMPTS:
        return RetryDecision(False, reason=f"{error.reason} (after {attempt} attempts)")
    return RetryDecision(
        True,
        max_tokens=max(settings.extract_retry_max_tokens, settings.extract_max_tokens),
        temperature=settings.extract_retry_temperature,
        reason=error.reason,
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
    """What one :func:`extract_batch` call did. ``pattern_ids`` are the newly stored patterns."""

    extracted: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    skipped: list[int] = field(default_factory=list)
    pattern_ids: list[uuid.UUID] = field(default_factory=list)
    relationships: int = 0
    unresolved_relationships: int = 0
    llm_calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    generate_seconds: float = 0.0


@dataclass
class _Work:
    interaction: Interaction
    attempt: int = 0
    result: ExtractionResult | None = None
    error: str | None = None


def _generate(
    engine: StructuredLLM,
    items: list[_Work],
    requests: list[GenerationRequest],
    batch_id: uuid.UUID,
    out: ExtractionBatchResult,
) -> tuple[list[Generation], list[dict[str, object]]]:
    started = time.perf_counter()
    generations = engine.generate(requests)
    elapsed = time.perf_counter() - started
    out.generate_seconds += elapsed
    calls: list[dict[str, object]] = []
    for work, gen in zip(items, generations, strict=True):
        out.llm_calls += 1
        out.tokens_in += gen.tokens_in
        out.tokens_out += gen.tokens_out
        calls.append(
            {
                "provider": engine.provider,
                "model": engine.model_name,
                "task_type": TASK_TYPE,
                "interaction_id": work.interaction.id,
                "batch_id": batch_id,
                "batch_size": len(requests),
                "attempt": work.attempt,
                "tokens_in": gen.tokens_in,
                "tokens_out": gen.tokens_out,
                "latency_ms": int(elapsed * 1000),
                "route_reason": "local engine",
            }
        )
    return generations, calls


def extract_batch(
    *,
    db: Database,
    engine: StructuredLLM,
    settings: Settings,
    interaction_ids: Sequence[int],
) -> ExtractionBatchResult:
    """Extract patterns and relationships for a batch of interactions with one engine call per
    attempt, and store them.

    Interactions already in a terminal status are left alone. A bad output is retried once
    (:func:`retry_decision`); an interaction whose output stays bad is marked ``failed`` with the
    reason, and the rest of the batch goes on. Every request is recorded in ``llm_calls``.

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
    pending = [_Work(r) for r in rows]
    if not pending:
        return out
    schema = extraction_json_schema()
    batch_id = uuid.uuid4()
    calls: list[dict[str, object]] = []
    todo = pending
    params = {"max_tokens": settings.extract_max_tokens, "temperature": 0.0}
    while todo:
        for work in todo:
            work.attempt += 1
        requests = [
            GenerationRequest(
                messages=extraction_messages(
                    w.interaction.content, max_chars=settings.extract_input_chars
                ),
                json_schema=schema,
                max_tokens=int(params["max_tokens"]),
                temperature=float(params["temperature"]),
                seed=settings.seed + w.interaction.id,
            )
            for w in todo
        ]
        generations, new_calls = _generate(engine, todo, requests, batch_id, out)
        retry: list[_Work] = []
        for work, gen, call in zip(todo, generations, new_calls, strict=True):
            if gen.finish_reason == "error":
                work.error = gen.error or "engine error"
                call.update(outcome="error", error=work.error)
                continue
            try:
                work.result = parse_output(gen.text, gen.finish_reason)
                work.error = None
                call.update(outcome="ok", error=None)
            except ModelOutputError as exc:
                call.update(outcome="truncated" if exc.truncated else "invalid", error=exc.reason)
                decision = retry_decision(work.attempt, exc, settings)
                work.error = decision.reason
                if decision.retry:
                    retry.append(work)
                    params = {
                        "max_tokens": decision.max_tokens,
                        "temperature": decision.temperature,
                    }
        calls.extend(new_calls)
        todo = retry

    with db.session() as session:
        session.execute(insert(LLMCall), calls)
        for work in pending:
            with session.begin_nested():
                _write_one(session, work, key, engine.model_name, settings, out)
    log.info(
        "extract_batch_done",
        batch=len(pending),
        extracted=len(out.extracted),
        failed=len(out.failed),
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
        return
    rows = [
        {
            "project_id": inter.project_id,
            "type": p.type,
            "title": p.title,
            "content": {"description": p.description, "evidence": p.evidence},
            "confidence": p.confidence,
            "extraction_method": "local_llm",
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
                        "extraction_method": "local_llm",
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
