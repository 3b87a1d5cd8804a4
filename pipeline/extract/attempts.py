"""One batched engine call per attempt, a retry for bad outputs, and the ``llm_calls`` rows: the
loop that extraction, strategic analysis and the error-fix batch share.

Each attempt hands every item still to do to the engine in one ``generate`` call (DESIGN.md: one
prompt per call is a bug). An output is judged by a ``parse`` function that raises
:class:`~pipeline.errors.ModelOutputError`; what to do next is a pure :class:`RetryDecision`
(:func:`one_retry`). Items the engine ``deferred`` (budget, provider unavailable) are neither
retried nor failed: the caller routes them elsewhere.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from pipeline.db.status import CallOutcome
from pipeline.errors import ModelOutputError
from pipeline.llm.base import Generation, GenerationRequest, StructuredLLM
from pipeline.types import Provider, TaskType

T = TypeVar("T")


@dataclass(frozen=True)
class RetryDecision:
    """Whether to try an item again, and with which token limit and temperature; when not,
    ``reason`` is the item's failure reason."""

    retry: bool
    max_tokens: int = 0
    temperature: float = 0.0
    reason: str = ""


def one_retry(
    attempt: int, error: ModelOutputError, *, max_tokens: int, temperature: float,
    max_attempts: int = 2,
) -> RetryDecision:  # fmt: skip
    """After a bad output on ``attempt`` (1-based): retry with ``max_tokens`` and
    ``temperature`` until ``max_attempts``, then fail with the error's reason and the count.

    Greedy decoding would repeat the same invalid text, so callers pass a sampling temperature
    (with a fixed seed, the retry stays repeatable).
    """
    if attempt >= max_attempts:
        return RetryDecision(False, reason=f"{error.reason} (after {attempt} attempts)")
    return RetryDecision(True, max_tokens=max_tokens, temperature=temperature, reason=error.reason)


def generate_and_record(
    engine: StructuredLLM,
    requests: Sequence[GenerationRequest],
    *,
    task_type: TaskType,
    attempts: Sequence[int],
    batch_id: uuid.UUID,
    route_reasons: Mapping[int, str] | None = None,
) -> tuple[list[Generation], list[dict[str, object]], float]:
    """Run one batched engine call and build its ``llm_calls`` rows (one per request, without
    ``outcome``/``error``, which the caller fills in once it has judged the output).

    Returns ``(generations, rows, seconds)``. Raises what ``engine.generate`` raises.
    """
    started = time.perf_counter()
    generations = engine.generate(requests)
    elapsed = time.perf_counter() - started
    reasons = route_reasons or {}
    default_reason = "claude engine" if engine.provider == Provider.CLAUDE else "local engine"
    calls: list[dict[str, object]] = []
    for request, attempt, gen in zip(requests, attempts, generations, strict=True):
        calls.append(
            {
                "provider": engine.provider,
                "model": engine.model_name,
                "task_type": task_type,
                "interaction_id": request.interaction_id,
                "batch_id": batch_id,
                "batch_size": len(requests),
                "attempt": attempt,
                "tokens_in": gen.tokens_in,
                "tokens_out": gen.tokens_out,
                "cache_read_tokens": gen.cache_read_tokens,
                "cache_write_tokens": gen.cache_write_tokens,
                "cost_usd": gen.cost_usd,
                "latency_ms": gen.latency_ms if gen.latency_ms is not None else int(elapsed * 1000),
                "route_reason": reasons.get(request.interaction_id or 0, default_reason),
            }
        )
    return generations, calls, elapsed


@dataclass
class Attempts(Generic[T]):
    """What :func:`generate_with_retries` did, by item key.

    ``results``: parsed outputs. ``failed``: key → reason (bad output after the last attempt,
    or an engine ``error``). ``deferred``: key → reason (not done by this engine). ``attempts``:
    key → attempts made. ``calls``: the ``llm_calls`` rows, outcome and error filled in.
    """

    results: dict[int, T] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    deferred: dict[int, str] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    calls: list[dict[str, object]] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0


def generate_with_retries(
    engine: StructuredLLM,
    keys: Sequence[int],
    *,
    request: Callable[[int, RetryDecision | None], GenerationRequest],
    parse: Callable[[str, str], T],
    decide: Callable[[int, ModelOutputError], RetryDecision],
    task_type: TaskType,
    route_reasons: Mapping[int, str] | None = None,
) -> Attempts[T]:
    """Generate and judge one output per key, one batched engine call per attempt.

    Args:
        keys: the items (interaction or error ids), each asked for once per attempt.
        request: builds an item's request; the decision is ``None`` on the first attempt, else
            the :class:`RetryDecision` that asked for the retry (its token limit, temperature).
        parse: ``(text, finish_reason) → result``, raising ``ModelOutputError`` on a bad one.
        decide: ``(attempt, error) → RetryDecision`` after a bad output.
        route_reasons: ``llm_calls.route_reason`` per interaction id.

    Raises:
        RetryableError / PermanentError: from the engine, when nothing could be generated.
    """
    out: Attempts[T] = Attempts()
    batch_id = uuid.uuid4()
    todo: list[tuple[int, RetryDecision | None]] = [(key, None) for key in keys]
    while todo:
        for key, _ in todo:
            out.attempts[key] = out.attempts.get(key, 0) + 1
        generations, rows, seconds = generate_and_record(
            engine,
            [request(key, decision) for key, decision in todo],
            task_type=task_type,
            attempts=[out.attempts[key] for key, _ in todo],
            batch_id=batch_id,
            route_reasons=route_reasons,
        )
        out.seconds += seconds
        retry: list[tuple[int, RetryDecision | None]] = []
        for (key, _), gen, row in zip(todo, generations, rows, strict=True):
            out.tokens_in += gen.tokens_in
            out.tokens_out += gen.tokens_out
            if gen.finish_reason == CallOutcome.DEFERRED:
                out.deferred[key] = gen.error or CallOutcome.DEFERRED.value
                row.update(outcome=CallOutcome.DEFERRED.value, error=out.deferred[key])
                continue
            if gen.finish_reason == "error":
                out.failed[key] = gen.error or "engine error"
                row.update(outcome=CallOutcome.ERROR.value, error=out.failed[key])
                continue
            try:
                out.results[key] = parse(gen.text, gen.finish_reason)
                out.failed.pop(key, None)
                row.update(outcome=CallOutcome.OK.value, error=None)
            except ModelOutputError as exc:
                outcome = CallOutcome.TRUNCATED if exc.truncated else CallOutcome.INVALID
                row.update(outcome=outcome.value, error=exc.reason)
                decision = decide(out.attempts[key], exc)
                if decision.retry:
                    retry.append((key, decision))
                else:
                    out.failed[key] = decision.reason
        out.calls.extend(rows)
        todo = retry
    return out
