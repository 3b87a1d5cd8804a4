"""One batched engine call per attempt, a retry for bad outputs, and the ``llm_calls`` rows: the
loop that extraction, strategic analysis and the error-fix batch share.

Each attempt hands every item still to do to the engine in one ``generate`` call (DESIGN.md: one
prompt per call is a bug). An output is judged by a ``parse`` function that raises
:class:`~pipeline.errors.ModelOutputError`; what to do next is a pure :class:`RetryDecision`
(:func:`one_retry`). Items the engine ``deferred`` (budget, provider unavailable) are neither
retried nor failed: the caller routes them elsewhere.

A retry need not run alone at batch-1 speed: with a :class:`Refill`, each retry round is topped
up with new first-attempt work (an extract task claims more queued interactions) to the batch
size, as a continuous-batching server would, for a bounded number of rounds.

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
    put in the response cache. ``refilled``: keys a :class:`Refill` added, in the order taken.
    Token counts and ``seconds`` are the engine's only.
    """

    results: dict[int, T] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    deferred: dict[int, str] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    calls: list[dict[str, object]] = field(default_factory=list)
    hits: set[int] = field(default_factory=set)
    accepted: dict[int, Generation] = field(default_factory=dict)
    refilled: list[int] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0

    @property
    def model_calls(self) -> int:
        """``llm_calls`` rows of requests handed to the engine (cache hits left out)."""
        return len(self.calls) - len(self.hits)


@dataclass(frozen=True)
class Fresh:
    """First-attempt work a :class:`Refill` hands the loop: ``keys`` that ``request`` and
    ``parse`` handle like the loop's own, the response cache's outputs of some of them, and
    their route reasons. Empty ``keys``: work was taken, but none of it needs the engine."""

    keys: Sequence[int] = ()
    cached: Mapping[int, CachedOutput] = field(default_factory=dict)
    route_reasons: Mapping[int, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Refill:
    """Where retries find company (continuous batching): before each retry round, while the
    round holds fewer than ``size`` requests, ``take(n)`` is asked for up to ``n`` new keys,
    which join the round as first attempts; it returns ``None`` when no more work is queued.

    ``rounds`` (≥ 1) bounds the engine calls that take new work (the first one included), and
    so how long one loop holds what it took: retries left after them run in rounds of their
    own. Engine calls in all: at most ``rounds`` plus the attempts a retry may still need.
    """

    take: Callable[[int], Fresh | None]
    size: int
    rounds: int = 4


#: Asks of :attr:`Refill.take` before one round (more than one when what it gave was served
#: without the engine: response-cache hits, work done by rule).
MAX_ASKS = 3

_Todo = tuple[int, RetryDecision | None]


@dataclass
class _Loop(Generic[T]):
    """The state of one :func:`generate_with_retries` call."""

    engine: StructuredLLM
    request: Callable[[int, RetryDecision | None], GenerationRequest]
    parse: Callable[[str, str], T]
    decide: Callable[[int, ModelOutputError], RetryDecision]
    task_type: TaskType
    reasons: dict[int, str]
    out: Attempts[T] = field(default_factory=Attempts)
    batch_id: uuid.UUID = field(default_factory=uuid.uuid4)

    def admit(self, keys: Sequence[int], cached: Mapping[int, CachedOutput]) -> list[_Todo]:
        """First attempts of ``keys``: serve those whose cached output parses, return the rest."""
        todo: list[_Todo] = []
        for key in keys:
            hit = cached.get(key)
            if hit is None or not _serve_hit(self.out, key, hit, self.parse):
                todo.append((key, None))
                continue
            self.out.calls.append(call_row(self.engine, self.request(key, None),
                                           task_type=self.task_type, batch_id=self.batch_id,
                                           route_reasons=self.reasons))  # fmt: skip
        return todo

    def top_up(self, todo: list[_Todo], refill: Refill) -> list[_Todo]:
        """``todo`` with new first attempts from ``refill`` up to its ``size``."""
        for _ in range(MAX_ASKS):
            room = refill.size - len(todo)
            fresh = refill.take(room) if room > 0 else None
            if fresh is None:
                break
            held = {key for key, _ in todo} | self.out.attempts.keys()
            keys = [key for key in fresh.keys if key not in held]  # never one key twice
            self.reasons.update(fresh.route_reasons)
            self.out.refilled.extend(keys)
            todo = [*todo, *self.admit(keys, fresh.cached)]
        return todo

    def attempt(self, todo: list[_Todo]) -> list[_Todo]:
        """One batched engine call over ``todo``; returns the retries it asks for."""
        out = self.out
        for key, _ in todo:
            out.attempts[key] = out.attempts.get(key, 0) + 1
        generations, rows, seconds = generate_and_record(
            self.engine,
            [self.request(key, decision) for key, decision in todo],
            task_type=self.task_type,
            attempts=[out.attempts[key] for key, _ in todo],
            batch_id=self.batch_id,
            route_reasons=self.reasons,
        )
        out.seconds += seconds
        retry: list[_Todo] = []
        for (key, _), gen, row in zip(todo, generations, rows, strict=True):
            out.tokens_in += gen.tokens_in
            out.tokens_out += gen.tokens_out
            if gen.finish_reason == CallOutcome.DEFERRED:
                out.deferred[key] = gen.error or CallOutcome.DEFERRED.value
                row.update(outcome=CallOutcome.DEFERRED.value, error=out.deferred[key])
            elif gen.finish_reason == "error":
                out.failed[key] = gen.error or "engine error"
                row.update(outcome=CallOutcome.ERROR.value, error=out.failed[key])
            else:
                retry.extend(self._judge(key, gen, row))
        out.calls.extend(rows)
        return retry

    def _judge(self, key: int, gen: Generation, row: dict[str, object]) -> list[_Todo]:
        """Parse one output into the results, or fail it; returns its retry, if any."""
        out = self.out
        try:
            out.results[key] = self.parse(gen.text, gen.finish_reason)
        except ModelOutputError as exc:
            outcome = CallOutcome.TRUNCATED if exc.truncated else CallOutcome.INVALID
            row.update(outcome=outcome.value, error=exc.reason)
            decision = self.decide(out.attempts[key], exc)
            if decision.retry:
                return [(key, decision)]
            out.failed[key] = decision.reason
            return []
        out.accepted[key] = gen
        out.failed.pop(key, None)
        row.update(outcome=CallOutcome.OK.value, error=None)
        return []


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
    refill: Refill | None = None,
) -> Attempts[T]:
    """Generate and judge one output per key, one batched engine call per attempt; keys with a
    ``cached`` output that parses make no engine call at all.

    With ``refill``, a retry never runs alone while work is queued: each retry round is topped
    up with new first attempts (:class:`Refill`), whose own retries ride in the next round, and
    so on until nothing is left; only when ``refill`` has nothing (or after its ``rounds``) does
    a retry round run short. The new keys end in the same :class:`Attempts` as ``keys``
    (listed in ``refilled`` too).

    Args:
        keys: the items (interaction or error ids), each asked for once per attempt.
        request: builds an item's request; the decision is ``None`` on the first attempt, else
            the :class:`RetryDecision` that asked for the retry (its token limit, temperature).
        parse: ``(text, finish_reason) → result``, raising ``ModelOutputError`` on a bad one.
        decide: ``(attempt, error) → RetryDecision`` after a bad output.
        route_reasons: ``llm_calls.route_reason`` per interaction id.
        cached: key → the response cache's output for the key's first-attempt request.
        refill: where retry rounds get new work; ``None``: retries run on their own.

    Raises:
        RetryableError / PermanentError: from the engine, when nothing could be generated
            (what earlier rounds and ``refill`` took is then in no result: the caller's to free).
    """
    loop: _Loop[T] = _Loop(engine, request, parse, decide, task_type, dict(route_reasons or {}))
    todo = loop.admit(keys, cached or {})
    rounds = 0
    while todo:
        rounds += 1
        if refill is not None and 1 < rounds <= refill.rounds:
            todo = loop.top_up(todo, refill)
        todo = loop.attempt(todo)
    return loop.out


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
