"""Unit tests of the attempt loop's refill (pipeline.extract.attempts.Refill): a retry rides in
the next engine call with new first attempts topping the call up to the batch size, runs alone
only when nothing more is queued, and the rounds that take new work are bounded. The engine is
scripted at its boundary (a StructuredLLM); no model, no database."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

from pipeline.errors import ModelOutputError
from pipeline.extract.attempts import Attempts, Fresh, Refill, generate_with_retries, one_retry
from pipeline.extract.cache import CachedOutput
from pipeline.llm.base import Generation, GenerationRequest
from pipeline.types import Provider, TaskType

GOOD = json.dumps({"ok": True})


def _parse(text: str, finish_reason: str) -> str:
    if text != GOOD:
        raise ModelOutputError("not the expected JSON")
    return text


class _Scripted:
    """A StructuredLLM whose output for a request is ``answer(request)``; it keeps each call's
    ``(key, attempt kind)`` pairs: ``"first"`` (greedy) or ``"retry"`` (sampled)."""

    provider = Provider.LOCAL
    model_name = "scripted"

    def __init__(self, answer: Callable[[GenerationRequest], str]) -> None:
        self.answer = answer
        self.calls: list[list[tuple[int, str]]] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.calls.append(
            [(r.interaction_id or 0, "retry" if r.temperature else "first") for r in requests]
        )
        return [Generation(self.answer(r), "stop", tokens_in=10, tokens_out=5) for r in requests]


def _bad_first_for(*keys: int) -> Callable[[GenerationRequest], str]:
    """Invalid output on the first attempt of ``keys``, good output everywhere else."""
    return lambda r: "not json" if r.interaction_id in keys and not r.temperature else GOOD


class _Queue:
    """A refill source: hands out ``keys`` in order, at most ``n`` per ask; ``None`` when empty.
    ``asks`` keeps each ask's ``n``."""

    def __init__(self, keys: Sequence[int], **fresh: object) -> None:
        self.keys = list(keys)
        self.fresh = fresh
        self.asks: list[int] = []

    def take(self, n: int) -> Fresh | None:
        self.asks.append(n)
        if not self.keys:
            return None
        got, self.keys = self.keys[:n], self.keys[n:]
        return Fresh(keys=got, **self.fresh)  # type: ignore[arg-type]


def _run(
    engine: _Scripted, keys: Sequence[int], refill: Refill | None, **kw: object
) -> Attempts[str]:
    def request(key: int, retry: object) -> GenerationRequest:
        return GenerationRequest(
            [{"role": "user", "content": f"item {key}"}],
            {"type": "object"},
            max_tokens=getattr(retry, "max_tokens", 64),
            temperature=getattr(retry, "temperature", 0.0),
            interaction_id=key,
        )

    return generate_with_retries(
        engine,
        keys,
        request=request,
        parse=_parse,
        decide=lambda attempt, exc: one_retry(attempt, exc, max_tokens=128, temperature=0.3),
        task_type=TaskType.PATTERN_EXTRACTION,
        refill=refill,
        **kw,  # type: ignore[arg-type]
    )


def test_a_retry_rides_in_the_next_call_with_refilled_first_attempts() -> None:
    engine = _Scripted(_bad_first_for(2))
    queue = _Queue([10, 11, 12, 13], route_reasons={10: "r10", 11: "r11"})
    out = _run(engine, [1, 2, 3], Refill(queue.take, size=3))
    # The retry of 2 goes out with two new first attempts, in one call of the batch's size.
    assert engine.calls == [
        [(1, "first"), (2, "first"), (3, "first")],
        [(2, "retry"), (10, "first"), (11, "first")],
    ]
    assert queue.asks == [2]  # asked for the room left beside the retry, once: it filled it
    assert out.refilled == [10, 11] and queue.keys == [12, 13]  # no more taken than needed
    assert sorted(out.results) == [1, 2, 3, 10, 11] and not out.failed
    assert out.attempts == {1: 1, 2: 2, 3: 1, 10: 1, 11: 1}
    rows = [(c["interaction_id"], c["attempt"], c["batch_size"], c["route_reason"], c["outcome"])
            for c in out.calls]  # fmt: skip
    assert rows[3:] == [
        (2, 2, 3, "local engine", "ok"),
        (10, 1, 3, "r10", "ok"),
        (11, 1, 3, "r11", "ok"),
    ]
    assert rows[1][4] == "invalid" and len(rows) == 6


def test_refilled_first_attempts_are_retried_with_the_next_refill() -> None:
    engine = _Scripted(_bad_first_for(2, 10))
    queue = _Queue([10, 11, 12, 13])
    out = _run(engine, [1, 2, 3], Refill(queue.take, size=3))
    assert engine.calls == [
        [(1, "first"), (2, "first"), (3, "first")],
        [(2, "retry"), (10, "first"), (11, "first")],
        [(10, "retry"), (12, "first"), (13, "first")],
    ]
    assert sorted(out.results) == [1, 2, 3, 10, 11, 12, 13]


def test_without_queued_work_the_retry_still_runs_alone() -> None:
    engine = _Scripted(_bad_first_for(2))
    queue = _Queue([])
    out = _run(engine, [1, 2, 3], Refill(queue.take, size=3))
    assert engine.calls[1] == [(2, "retry")]
    assert queue.asks == [2] and out.refilled == [] and sorted(out.results) == [1, 2, 3]


def test_without_a_retry_nothing_is_refilled() -> None:
    engine = _Scripted(_bad_first_for())
    queue = _Queue([10])
    out = _run(engine, [1, 2], Refill(queue.take, size=2))
    assert len(engine.calls) == 1 and queue.asks == [] and out.refilled == []


def test_rounds_that_take_new_work_are_bounded() -> None:
    # Every first attempt fails, every retry passes, and the queue never runs dry.
    engine = _Scripted(lambda r: GOOD if r.temperature else "not json")
    queue = _Queue(range(100, 200))
    out = _run(engine, [1, 2, 3], Refill(queue.take, size=4, rounds=3))
    assert engine.calls == [
        [(1, "first"), (2, "first"), (3, "first")],
        [(1, "retry"), (2, "retry"), (3, "retry"), (100, "first")],
        [(100, "retry"), (101, "first"), (102, "first"), (103, "first")],
        [(101, "retry"), (102, "retry"), (103, "retry")],  # round 4 > rounds: runs short
    ]
    assert out.refilled == [100, 101, 102, 103] and queue.asks == [1, 3]
    assert sorted(out.results) == [1, 2, 3, 100, 101, 102, 103]


def test_a_full_retry_round_takes_nothing() -> None:
    engine = _Scripted(lambda r: GOOD if r.temperature else "not json")
    queue = _Queue([10])
    _run(engine, [1, 2], Refill(queue.take, size=2))
    assert engine.calls[1] == [(1, "retry"), (2, "retry")] and queue.asks == []


def test_rounds_one_never_refills() -> None:
    engine = _Scripted(_bad_first_for(1))
    queue = _Queue([10])
    _run(engine, [1, 2], Refill(queue.take, size=2, rounds=1))
    assert engine.calls[1] == [(1, "retry")] and queue.asks == []


def test_refilled_cache_hits_need_no_engine_and_the_room_is_asked_for_again() -> None:
    engine = _Scripted(_bad_first_for(2))
    hits = {10: CachedOutput(GOOD, 1, 1), 11: CachedOutput("stale", 1, 1)}
    queue = _Queue([10, 11, 12, 13], cached=hits)
    out = _run(engine, [1, 2], Refill(queue.take, size=2))
    # 10 is served from the cache; 11's cached text no longer parses: it goes to the engine.
    assert engine.calls[1] == [(2, "retry"), (11, "first")]
    assert queue.asks == [1, 1] and out.hits == {10} and out.refilled == [10, 11]
    assert [c["cache_hit"] for c in out.calls if c["interaction_id"] == 10] == [True]
    assert sorted(out.results) == [1, 2, 10, 11]


def test_work_taken_but_done_without_the_engine_lets_it_ask_again_a_bounded_number_of_times() -> (
    None
):
    engine = _Scripted(_bad_first_for(1))
    asks: list[int] = []

    def nothing_for_the_engine(n: int) -> Fresh:
        asks.append(n)
        return Fresh()  # claimed work done by rule: more may be queued

    _run(engine, [1], Refill(nothing_for_the_engine, size=4))
    assert engine.calls[1] == [(1, "retry")] and len(asks) == 3


def test_a_key_handed_over_twice_is_asked_for_once() -> None:
    engine = _Scripted(_bad_first_for(2))
    queue = _Queue([2, 3, 10])
    out = _run(engine, [1, 2, 3], Refill(queue.take, size=3))
    assert engine.calls[1] == [(2, "retry"), (10, "first")]
    assert out.refilled == [10] and out.attempts[2] == 2 and out.attempts[3] == 1


def test_a_refilled_key_the_engine_defers_or_fails_is_reported_like_the_batchs_own() -> None:
    class _Mixed(_Scripted):
        def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
            out = super().generate(requests)
            fixed = {10: Generation("", "deferred", 0, 0, error="budget"),
                     11: Generation("", "error", 0, 0, error="too long")}  # fmt: skip
            return [fixed.get(r.interaction_id or 0, g) for r, g in zip(requests, out, strict=True)]

    engine = _Mixed(_bad_first_for(1))
    out = _run(engine, [1], Refill(_Queue([10, 11]).take, size=3))
    assert out.deferred == {10: "budget"} and out.failed == {11: "too long"}
    assert sorted(out.results) == [1]
