"""One batched engine call per attempt, a retry for bad outputs, and the ``llm_calls`` rows: the
loop that extraction, strategic analysis and the error-fix batch share.

Each attempt hands every item still to do to the engine in one ``generate`` call (DESIGN.md: one
prompt per call is a bug). An output is judged by a ``parse`` function that raises
:class:`~pipeline.errors.ModelOutputError`; what to do next is a pure :class:`RetryDecision`
(:func:`one_retry`). Items the engine ``deferred`` (budget, provider unavailable) are neither
retried nor failed: the caller routes them elsewhere.

Items with an output from the exact response cache (:mod:`pipeline.extract.cache`, looked up by
the caller) are judged by the same ``parse`` first: one that parses is served with no engine call
(an ``llm_calls`` row with ``cache_hit``, no tokens, no cost); one that no longer parses goes to
the engine like the rest.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Generic, TypeVar

from pipeline.db.status import CallOutcome
from pipeline.errors import ModelOutputError
from pipeline.extract.cache import CachedOutput
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


def call_row(
    engine: StructuredLLM,
    request: GenerationRequest,
    *,
    task_type: TaskType,
    batch_id: uuid.UUID,
    route_reasons: Mapping[int, str] | None,
) -> dict[str, object]:
    """The ``llm_calls`` row of one request, before its engine figures: a cache hit as it
    stands (attempt 1, ``batch_size`` 0: no engine call carried it, no tokens, no cost, no
    latency, outcome ``ok``); :func:`generate_and_record` fills in a model call's figures."""
    default_reason = "claude engine" if engine.provider == Provider.CLAUDE else "local engine"
    return {
        "provider": engine.provider,
        "model": engine.model_name,
        "task_type": task_type,
        "interaction_id": request.interaction_id,
        "batch_id": batch_id,
        "batch_size": 0,
        "attempt": 1,
        "tokens_in": 0,
        "tokens_out": 0,
        "cache_read_tokens": 0,
        "cache_write_tokens": 0,
        "cost_usd": Decimal(0),
        "latency_ms": 0,
        "route_reason": (route_reasons or {}).get(request.interaction_id or 0, default_reason),
        "cache_hit": True,
        "outcome": CallOutcome.OK.value,
        "error": None,
    }


def generate_and_record(
    engine: StructuredLLM,
    requests: Sequence[GenerationRequest],
    *,
    task_type: TaskType,
    attempts: Sequence[int],
    batch_id: uuid.UUID,
    route_reasons: Mapping[int, str] | None = None,
) -> tuple[list[Generation], list[dict[str, object]], float]:
    """Run one batched engine call and build its ``llm_calls`` rows (one per request, with
    ``outcome``/``error`` left for the caller to fill in once it has judged the output).

    Returns ``(generations, rows, seconds)``. Raises what ``engine.generate`` raises.
    """
    started = time.perf_counter()
    generations = engine.generate(requests)
    elapsed = time.perf_counter() - started
    calls: list[dict[str, object]] = []
    for request, attempt, gen in zip(requests, attempts, generations, strict=True):
        row = call_row(engine, request, task_type=task_type, batch_id=batch_id,
                       route_reasons=route_reasons)  # fmt: skip
        row.update(
            batch_size=len(requests),
            attempt=attempt,
            tokens_in=gen.tokens_in,
            tokens_out=gen.tokens_out,
            cache_read_tokens=gen.cache_read_tokens,
            cache_write_tokens=gen.cache_write_tokens,
            cost_usd=gen.cost_usd,
            latency_ms=gen.latency_ms if gen.latency_ms is not None else int(elapsed * 1000),
            cache_hit=False,
            outcome=None,
        )
        calls.append(row)
    return generations, calls, elapsed


@dataclass
class Attempts(Generic[T]):
    """What :func:`generate_with_retries` did, by item key.

    ``results``: parsed outputs. ``failed``: key → reason (bad output after the last attempt,
    or an engine ``error``). ``deferred``: key → reason (not done by this engine). ``attempts``:
    key → attempts made. ``calls``: the ``llm_calls`` rows, outcome and error filled in
    (cache hits included, ``cache_hit`` true). ``hits``: keys served from the response cache.
    ``accepted``: key → the engine's output that parsed (never a cache hit's), for the caller to
    put in the response cache. Token counts and ``seconds`` are the engine's only.
    """

    results: dict[int, T] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    deferred: dict[int, str] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    calls: list[dict[str, object]] = field(default_factory=list)
    hits: set[int] = field(default_factory=set)
    accepted: dict[int, Generation] = field(default_factory=dict)
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0

    @property
    def model_calls(self) -> int:
        """``llm_calls`` rows of requests handed to the engine (cache hits left out)."""
        return len(self.calls) - len(self.hits)


def generate_with_retries(
    engine: StructuredLLM,
    keys: Sequence[int],
    *,
    request: Callable[[int, RetryDecision | None], GenerationRequest],
    parse: Callable[[str, str], T],
    decide: Callable[[int, ModelOutputError], RetryDecision],
    task_type: TaskType,
    route_reasons: Mapping[int, str] | None = None,
    cached: Mapping[int, CachedOutput] | None = None,
) -> Attempts[T]:
    """Generate and judge one output per key, one batched engine call per attempt; keys with a
    ``cached`` output that parses make no engine call at all.

    Args:
        keys: the items (interaction or error ids), each asked for once per attempt.
        request: builds an item's request; the decision is ``None`` on the first attempt, else
            the :class:`RetryDecision` that asked for the retry (its token limit, temperature).
        parse: ``(text, finish_reason) → result``, raising ``ModelOutputError`` on a bad one.
        decide: ``(attempt, error) → RetryDecision`` after a bad output.
        route_reasons: ``llm_calls.route_reason`` per interaction id.
        cached: key → the response cache's output for the key's first-attempt request.

    Raises:
        RetryableError / PermanentError: from the engine, when nothing could be generated.
    """
    out: Attempts[T] = Attempts()
    batch_id = uuid.uuid4()
    todo: list[tuple[int, RetryDecision | None]] = []
    for key in keys:
        hit = (cached or {}).get(key)
        if hit is None or not _serve_hit(out, key, hit, parse):
            todo.append((key, None))
            continue
        out.calls.append(call_row(engine, request(key, None), task_type=task_type,
                                  batch_id=batch_id, route_reasons=route_reasons))  # fmt: skip
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
                out.accepted[key] = gen
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


def _serve_hit(
    out: Attempts[T], key: int, hit: CachedOutput, parse: Callable[[str, str], T]
) -> bool:
    """Judge a cached output as the engine's would be; True when it parsed and ``key`` is done
    (a cached output that no longer parses, e.g. after a stricter parser, is a miss)."""
    try:
        out.results[key] = parse(hit.text, "stop")
    except ModelOutputError:
        return False
    out.hits.add(key)
    out.attempts[key] = 1
    return True
