"""The TypeScript error-fix batch: suggest fixes for compiler errors from accepted earlier ones.

Flow of one batch (:func:`process_batch`), every 10 minutes from Celery beat or on demand:

1. take a session-level advisory lock (:data:`BATCH_LOCK_KEY`); if another batch holds it, do
   nothing: exactly one batch runs at a time, however many beats or workers exist;
2. claim up to ``limit`` ``pending`` rows with ``FOR UPDATE SKIP LOCKED`` (status ``processing``;
   a ``processing`` row older than ``errorfix_claim_timeout_s`` is claimed again);
3. embed message and snippet; retrieve the 3 nearest earlier errors of the project whose fix was
   accepted (cosine distance on ``code_analysis.embedding``);
4. ask the model for a fix as structured output (:class:`~pipeline.errorfix.prompt.FixSuggestion`),
   all errors in one batched call, the retrieved fixes given as examples; retry a bad output once;
5. compile each fix with ``tsc`` where it is available (:mod:`pipeline.errorfix.compiler`), and
   send the fixes it does not verify back to the model once with its diagnostics, compiling the
   answers again (compiler in the loop, :mod:`pipeline.errorfix.loop`);
6. store a ``code_analysis`` row and set the error ``ai_suggested`` with the compiler's word on
   the fix (``fix_check``: ``verified``, ``does_not_compile``, ``unresolved`` or
   ``unchecked``), or ``failed`` with the reason.

Parsing is :mod:`pipeline.errorfix.parsing`; the tables' SQL is :mod:`pipeline.errorfix.store`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import text

from pipeline.db.engine import Database
from pipeline.db.models import TypeScriptError
from pipeline.errorfix.compiler import find_tsc
from pipeline.errorfix.loop import LoopResult, compile_loop
from pipeline.errorfix.prompt import FixSuggestion, fix_messages, parse_fix
from pipeline.errorfix.store import (
    FixOutcome,
    claim,
    load_claimed,
    record_outcomes,
    release_claims,
    store_embeddings_and_examples,
)
from pipeline.errors import PipelineError
from pipeline.extract.attempts import Attempts, RetryDecision, generate_with_retries, one_retry
from pipeline.llm.base import GenerationRequest, StructuredLLM
from pipeline.settings import Settings
from pipeline.store.embedder import Embedder
from pipeline.types import TaskType

log = structlog.get_logger(__name__)

TASK_TYPE = TaskType.ERROR_FIX
#: Key of the advisory lock that makes the batch a singleton ("tsfx").
BATCH_LOCK_KEY = 0x7473_6678
#: Accepted fixes retrieved as examples per error.
EXAMPLES = 3
MAX_ATTEMPTS = 2


@dataclass
class BatchSummary:
    """What one batch did (the ``--json`` summary of ``patterns errors process``). ``tsc_*``
    count the kept fixes tsc checked, compiled, resolved (their error code gone) and verified
    (both); ``first_tsc_*`` the same of the model's first fixes, before the compiler-in-the-loop
    retry; ``tsc_retried`` fixes sent back, ``tsc_improved`` retries that replaced their fix."""

    processed: int = 0
    suggested: int = 0
    failed: int = 0
    retrieved_examples: int = 0
    seconds: float = 0.0
    locked_out: bool = False
    tsc_checked: int = 0
    tsc_compiles: int = 0
    tsc_resolved: int = 0
    tsc_verified: int = 0
    tsc_retried: int = 0
    tsc_improved: int = 0
    first_tsc_compiles: int = 0
    first_tsc_resolved: int = 0
    first_tsc_verified: int = 0
    failures: dict[int, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (without the per-error failure reasons)."""
        return {
            "processed": self.processed,
            "suggested": self.suggested,
            "failed": self.failed,
            "retrieved_examples": self.retrieved_examples,
            "seconds": round(self.seconds, 2),
            "locked_out": self.locked_out,
            "tsc_checked": self.tsc_checked,
            "tsc_compiles": self.tsc_compiles,
            "tsc_resolved": self.tsc_resolved,
            "tsc_verified": self.tsc_verified,
            "tsc_retried": self.tsc_retried,
            "tsc_improved": self.tsc_improved,
            "first_tsc_compiles": self.first_tsc_compiles,
            "first_tsc_resolved": self.first_tsc_resolved,
            "first_tsc_verified": self.first_tsc_verified,
        }


def process_batch(
    *,
    db: Database,
    engine: StructuredLLM,
    embedder: Embedder,
    settings: Settings,
    limit: int | None = None,
) -> BatchSummary:
    """Run one error-fix batch (see the module docstring). Returns its summary.

    If another batch holds the lock, returns at once with ``locked_out=True``.

    Raises:
        RetryableError / PermanentError: from the engine when nothing could be generated; the
            claimed rows go back to ``pending``.
    """
    started = time.perf_counter()
    summary = BatchSummary()
    with db.engine.connect() as lock_conn:
        got = lock_conn.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": BATCH_LOCK_KEY})
        lock_conn.commit()
        if not got:
            summary.locked_out = True
            return summary
        try:
            ids = claim(
                db, limit or settings.errorfix_batch_size, settings.errorfix_claim_timeout_s
            )
            if ids:
                try:
                    _process(db, engine, embedder, settings, ids, summary)
                except PipelineError:
                    release_claims(db, ids)
                    raise
        finally:
            lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": BATCH_LOCK_KEY})
            lock_conn.commit()
    summary.seconds = time.perf_counter() - started
    log.info("errorfix_batch_done", **summary.as_dict())
    return summary


def embed_text(error: TypeScriptError) -> str:
    """The text an error is embedded from: code, message and snippet."""
    return f"{error.error_code}: {error.error_message}\n{error.code_snippet or ''}".strip()


def _process(
    db: Database,
    engine: StructuredLLM,
    embedder: Embedder,
    settings: Settings,
    ids: list[int],
    summary: BatchSummary,
) -> None:
    errors = load_claimed(db, ids)
    vectors = embedder.encode([embed_text(e) for e in errors])
    examples = store_embeddings_and_examples(db, errors, vectors, EXAMPLES)
    summary.retrieved_examples = sum(len(found) for found in examples.values())
    attempts = _generate(engine, settings, errors, examples)
    # The local engine never defers; were one to, the error fails with the engine's reason.
    reasons = {**attempts.failed, **attempts.deferred}
    by_id = {e.id: e for e in errors}
    loop = compile_loop(
        engine=engine, settings=settings, tsc=find_tsc(settings.tsc_path), errors=by_id,
        examples=examples, fixes=attempts.results,
    )  # fmt: skip
    _count_checks(summary, loop)
    outcomes: list[FixOutcome] = []
    for error, vec in zip(errors, vectors, strict=True):
        summary.processed += 1
        kept = loop.fixes.get(error.id)
        if kept is None:
            summary.failed += 1
            summary.failures[error.id] = reasons.get(error.id, "no output")
            outcomes.append(FixOutcome(error, vec, (), failure=summary.failures[error.id]))
            continue
        summary.suggested += 1
        fix, check = kept.fix, kept.check
        outcomes.append(
            FixOutcome(
                error, vec, examples[error.id], fix.fixed_code, fix.explanation, fix.confidence,
                compiles=check.compiles if check else None,
                error_resolved=check.error_resolved if check else None,
                check_status=kept.status.value, first_check_status=kept.first_status.value,
                compile_attempts=kept.compile_attempts,
                diagnostics=list(check.diagnostics) if check else [],
            )
        )  # fmt: skip
    record_outcomes(db, outcomes, engine.model_name, [*attempts.calls, *loop.calls])


def _count_checks(summary: BatchSummary, loop: LoopResult) -> None:
    """The ``tsc_*`` counts of :class:`BatchSummary` from the loop's checks."""
    for kept in loop.fixes.values():
        for check, prefix in ((kept.check, "tsc_"), (kept.first, "first_tsc_")):
            if check is None:
                continue
            for name, hit in (("compiles", check.compiles), ("resolved", check.error_resolved),
                              ("verified", check.verified)):  # fmt: skip
                setattr(summary, prefix + name, getattr(summary, prefix + name) + int(hit))
    summary.tsc_checked = sum(1 for kept in loop.fixes.values() if kept.check is not None)
    summary.tsc_retried, summary.tsc_improved = loop.retried, loop.improved


def _generate(
    engine: StructuredLLM,
    settings: Settings,
    errors: Sequence[TypeScriptError],
    examples: dict[int, list[Any]],
) -> Attempts[FixSuggestion]:
    schema = FixSuggestion.model_json_schema()
    by_id = {e.id: e for e in errors}

    def request(error_id: int, retry: RetryDecision | None) -> GenerationRequest:
        return GenerationRequest(
            fix_messages(by_id[error_id], examples[error_id]),
            schema,
            retry.max_tokens if retry else settings.errorfix_max_tokens,
            retry.temperature if retry else 0.0,
            seed=settings.seed + error_id,
            task_type=TASK_TYPE,
        )

    return generate_with_retries(
        engine,
        list(by_id),
        request=request,
        parse=parse_fix,
        decide=lambda attempt, exc: one_retry(
            attempt,
            exc,
            max_tokens=settings.errorfix_retry_max_tokens,
            temperature=settings.extract_retry_temperature,
            max_attempts=MAX_ATTEMPTS,
        ),
        task_type=TASK_TYPE,
    )
