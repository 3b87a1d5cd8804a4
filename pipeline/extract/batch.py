"""Pattern extraction: many interactions, one batched model call, idempotent writes.

Pure parts, tested with plain values: :func:`parse_output` (text → validated result or
:class:`~pipeline.errors.ModelOutputError`), :func:`retry_decision` (what to do after a bad output)
and :func:`pipeline.extract.relationships.resolve_relationships` (model titles → pattern ids).
:func:`extract_batch` ties them to an engine and the database (:mod:`pipeline.extract.write`).

Idempotency: results are keyed on ``(interaction, prompt version, schema version, model)``
(:func:`extraction_key`); an interaction is written under a row lock only while it is not yet in a
terminal status, so a task that runs twice leaves the rows of one run.

Before the first attempt, each interaction's prompt is looked up in the exact response cache
(:mod:`pipeline.extract.cache`, key: project, model, :data:`PROMPT_VERSION`,
:data:`SCHEMA_VERSION`, prompt SHA-256): a hit is served with no engine call; every output that
parsed is cached in the batch's write transaction.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Mapping, Sequence

import structlog
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, LLMCall
from pipeline.db.status import WAITING_STATUSES, ExtractionMethod
from pipeline.errors import ModelOutputError
from pipeline.extract.attempts import (
    Attempts,
    Fresh,
    Refill,
    RetryDecision,
    generate_with_retries,
    one_retry,
)
from pipeline.extract.bulk import write_batch
from pipeline.extract.cache import CacheKey, Versions, lookup_outputs, remember
from pipeline.extract.prompts import EXAMPLE_TITLES, PROMPT_VERSION, extraction_messages
from pipeline.extract.schemas import (
    SCHEMA_VERSION,
    ExtractionResult,
    extraction_json_schema,
    validate_output,
)
from pipeline.extract.trivial import trivial_reason
from pipeline.extract.write import ExtractionBatchResult, Provenance, Work
from pipeline.llm.base import GenerationRequest, StructuredLLM
from pipeline.settings import Settings
from pipeline.spend.routing import priority_of
from pipeline.store.events import lock_projects
from pipeline.text import normalize_title
from pipeline.types import Priority, Provider, TaskType

log = structlog.get_logger(__name__)

TASK_TYPE = TaskType.PATTERN_EXTRACTION
#: What a cached extraction output depends on besides its prompt (:mod:`pipeline.extract.cache`).
CACHE_VERSIONS = Versions(TASK_TYPE, PROMPT_VERSION, SCHEMA_VERSION)
#: Attempts per interaction: the first, and one retry with a larger token limit.
MAX_ATTEMPTS = 2
#: ``more(n)``: up to ``n`` more interactions for a batch whose retries need company, already
#: claimed and routed to this engine, as id → route reason; empty when what was claimed went
#: elsewhere (Claude), ``None`` when nothing more is queued (:func:`extract_batch`).
MoreWork = Callable[[int], Mapping[int, str] | None]


def extraction_key(model_name: str) -> str:
    """The idempotency key of an extraction result, without the interaction id:
    ``p<prompt version>:s<schema version>:<model>``."""
    return f"p{PROMPT_VERSION}:s{SCHEMA_VERSION}:{model_name}"


def parse_output(text: str, finish_reason: str) -> ExtractionResult:
    """Validate a model's output against :class:`ExtractionResult` and clean it.

    An answer with no patterns is the trivial answer (``trivial``, no relationships); one with
    patterns is a lesson even if it also says ``trivial`` (the patterns were written first, and
    a small model's verdict is the less reliable part: docs/QUALITY.md). Cleaning: patterns
    that repeat a title of the prompt's examples are dropped (the model echoed them); later
    patterns with the same normalised title as an earlier one are dropped.

    Raises:
        ModelOutputError: generation stopped at the token limit (``truncated=True``), the text is
            not valid JSON of the schema, or patterns were given and none is left after cleaning.
    """
    result = validate_output(ExtractionResult, text, finish_reason)
    if not result.patterns:
        return ExtractionResult(trivial=True)
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
    return ExtractionResult(patterns=kept, relationships=result.relationships, trivial=False)


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


def extraction_method(engine: StructuredLLM) -> ExtractionMethod:
    """``patterns.extraction_method`` for an engine: ``commercial_llm`` for Claude, else
    ``local_llm``."""
    if engine.provider == Provider.CLAUDE:
        return ExtractionMethod.COMMERCIAL_LLM
    return ExtractionMethod.LOCAL_LLM


def extract_batch(
    *,
    db: Database,
    engine: StructuredLLM,
    settings: Settings,
    interaction_ids: Sequence[int],
    route_reasons: Mapping[int, str] | None = None,
    keep_failures: bool = False,
    more: MoreWork | None = None,
) -> ExtractionBatchResult:
    """Extract patterns and relationships for a batch of interactions with one engine call per
    attempt, and store them. Interactions trivial by rule (:func:`pipeline.extract.trivial.
    trivial_reason`: a dependency bump, release preparation...) are stored as trivial without a
    model call.

    Interactions already in a terminal status are left alone. A bad output is retried once
    (:func:`retry_decision`); an interaction whose output stays bad is marked ``failed`` with the
    reason (with ``keep_failures``, left waiting and listed in ``deferred`` instead, for the
    ``local_fallback`` strategy to hand to Claude), and the rest of the batch goes on. An output
    the engine ``deferred`` (budget, provider unavailable) is not retried here: it is listed in
    ``deferred``. Every request is recorded in ``llm_calls``, with ``route_reasons[id]`` as its
    route reason when given; one answered from the response cache (``settings.response_cache``)
    reaches no engine and is recorded as a cache hit.

    With ``more``, a retry does not run alone: each retry round is topped up to
    ``extract_batch_size`` with interactions ``more`` hands over (for at most
    ``extract_refill_rounds`` engine calls; :class:`~pipeline.extract.attempts.Refill`), and
    those are extracted, recorded and stored like the batch's own (trivial rules, response
    cache, their route reasons).

    Returns:
        What was extracted, failed and stored; ``pattern_ids`` lists the new patterns to embed.

    Raises:
        RetryableError / PermanentError: from the engine, when nothing could be generated.
    """
    out = ExtractionBatchResult()
    rows = _waiting(db, interaction_ids)
    if not rows:
        return out
    attempts, keys, taken = _answers(db, engine, settings, rows, route_reasons, more)
    rows = sorted([*rows, *taken], key=lambda row: row.id)  # written like the batch's own
    out.llm_calls, out.cache_hits = attempts.model_calls, len(attempts.hits)
    out.tokens_in, out.tokens_out = attempts.tokens_in, attempts.tokens_out
    out.generate_seconds = attempts.seconds
    source = Provenance(
        extraction_key(engine.model_name),
        engine.model_name,
        extraction_method(engine),
        settings,
    )
    with db.session(ALL_PROJECTS) as session:
        if attempts.calls:  # an empty list would insert one row of defaults
            session.execute(insert(LLMCall), attempts.calls)
        remember(session, keys, attempts.accepted)
        lock_projects(session, {row.project_id for row in rows})
        works: list[tuple[Work, uuid.UUID]] = []
        for row in rows:
            result, failure = attempts.results.get(row.id), attempts.failed.get(row.id)
            if row.id in attempts.deferred or (keep_failures and result is None):
                out.deferred[row.id] = attempts.deferred.get(row.id) or failure or "deferred"
                continue
            works.append((Work(row.id, attempts.attempts[row.id], result, failure),
                          row.project_id))  # fmt: skip
        write_batch(session, works, source, out)
    log.info(
        "extract_batch_done",
        provider=engine.provider,
        batch=len(rows),
        extracted=len(out.extracted),
        failed=len(out.failed),
        deferred=len(out.deferred),
        patterns=len(out.pattern_ids),
        relationships=out.relationships,
        cache_hits=out.cache_hits,
        tokens_out=out.tokens_out,
        seconds=round(out.generate_seconds, 2),
    )
    return out


def _waiting(db: Database, interaction_ids: Sequence[int]) -> list[Interaction]:
    """The interactions among ``interaction_ids`` still waiting for extraction, by id."""
    with db.session(ALL_PROJECTS) as session:
        return list(
            session.scalars(
                select(Interaction)
                .where(
                    Interaction.id.in_(list(interaction_ids)),
                    Interaction.status.in_([s.value for s in WAITING_STATUSES]),
                )
                .order_by(Interaction.id)
            ).all()
        )


def _answers(
    db: Database,
    engine: StructuredLLM,
    settings: Settings,
    rows: Sequence[Interaction],
    route_reasons: Mapping[int, str] | None,
    more: MoreWork | None,
) -> tuple[Attempts[ExtractionResult], dict[int, CacheKey], list[Interaction]]:
    """Interactions trivial by rule (:mod:`pipeline.extract.trivial`) get the trivial answer
    with no model call (attempt count 0, no ``llm_calls`` row); the rest go to the response
    cache, then to the engine, one batched call per attempt
    (:func:`~pipeline.extract.attempts.generate_with_retries`), retry rounds topped up through
    ``more``. Returns the attempts, the cache keys (empty with the cache off) and the rows the
    refills took."""
    batch = _Batch(db, engine, settings)
    first = batch.admit(rows)
    refill = None
    if more is not None:
        refill = Refill(
            take=functools.partial(batch.take, more),
            size=settings.extract_batch_size,
            rounds=settings.extract_refill_rounds,
        )
    attempts = generate_with_retries(
        engine,
        first.keys,
        request=batch.request,
        parse=parse_output,
        decide=lambda attempt, exc: retry_decision(attempt, exc, settings),
        task_type=TASK_TYPE,
        route_reasons=route_reasons,
        cached=first.cached,
        refill=refill,
    )
    for iid in batch.ruled:
        attempts.results[iid], attempts.attempts[iid] = ExtractionResult(trivial=True), 0
    if batch.taken:
        log.info("extract_batch_refilled", own=len(rows), refilled=len(batch.taken),
                 to_engine=len(attempts.refilled))  # fmt: skip
    return attempts, batch.keys, batch.taken


def extraction_request(
    content: str,
    key: int,
    settings: Settings,
    retry: RetryDecision | None = None,
    *,
    priority: Priority = Priority.NORMAL,
) -> GenerationRequest:
    """The extraction request for one interaction's ``content`` (``key``: its id, which also
    seeds sampling): greedy with ``extract_max_tokens`` on the first attempt, else the
    ``retry`` decision's token limit and temperature; output constrained to the extraction
    schema. ``patterns eval`` builds its requests here too, so it measures what runs."""
    return GenerationRequest(
        messages=extraction_messages(content, max_chars=settings.extract_input_chars),
        json_schema=extraction_json_schema(),
        max_tokens=retry.max_tokens if retry else settings.extract_max_tokens,
        temperature=retry.temperature if retry else 0.0,
        seed=settings.seed + key,
        task_type=TASK_TYPE,
        interaction_id=key,
        priority=priority,
    )


class _Batch:
    """What the attempt loop needs of a batch's interactions, its own and those refills take:
    each one's row (for its request), the ones trivial by rule, the response-cache keys."""

    def __init__(self, db: Database, engine: StructuredLLM, settings: Settings) -> None:
        self.db, self.engine, self.settings = db, engine, settings
        self.by_id: dict[int, Interaction] = {}
        self.ruled: set[int] = set()
        self.keys: dict[int, CacheKey] = {}
        self.taken: list[Interaction] = []

    def request(self, iid: int, retry: RetryDecision | None) -> GenerationRequest:
        """Interaction ``iid``'s extraction request (:func:`extraction_request`)."""
        interaction = self.by_id[iid]
        return extraction_request(
            interaction.content, iid, self.settings, retry,
            priority=priority_of(interaction.metadata_),
        )  # fmt: skip

    def admit(self, rows: Sequence[Interaction]) -> Fresh:
        """Set aside the rows trivial by rule; the others' ids (for the engine) with the
        response cache's outputs for them."""
        ruled = {row.id for row in rows if trivial_reason(row.content) is not None}
        asked = [row for row in rows if row.id not in ruled]
        self.ruled |= ruled
        self.by_id.update((row.id, row) for row in asked)
        keys, cached = lookup_outputs(
            self.db,
            {row.id: self.request(row.id, None) for row in asked},
            {row.id: row.project_id for row in asked},
            model=self.engine.model_name,
            versions=CACHE_VERSIONS,
            enabled=self.settings.response_cache,
        )
        self.keys.update(keys)
        return Fresh(keys=[row.id for row in asked], cached=cached)

    def take(self, more: MoreWork, n: int) -> Fresh | None:
        """Up to ``n`` more interactions from ``more``, admitted like the batch's own, with
        their route reasons; ``None`` when nothing more is queued."""
        reasons = more(n)
        if not reasons:
            return None if reasons is None else Fresh()
        rows = _waiting(self.db, list(reasons))
        self.taken.extend(rows)
        fresh = self.admit(rows)
        return Fresh(fresh.keys, fresh.cached, {iid: reasons[iid] for iid in fresh.keys})
