"""Extraction throughput: the extract worker's path against raw vLLM on the same prompts, in one
process, in the steady state of a queue holding more than one batch.

Measurements on the first N pull requests of the shared celery corpus (or the bundled sample),
with one engine loaded once; vLLM's prefix cache is emptied before each measured run, so no run
reuses another's prompts (each still reuses the shared system prompt and example within itself).
B is ``PATTERNS_EXTRACT_BATCH_SIZE`` (32); N should be a few times B (default 96):

1. ``pipeline``: the N interactions are stored on a fresh embedded Postgres and published as
   extract tasks of B (``publish_pending``, as ``patterns ingest`` does, to a dispatcher that
   keeps the messages in a list instead of Redis); then each message runs in turn through
   ``extract_routed``, what the extract worker's task runs: the claim under the task's lease,
   routing, extraction with retries, the writes, the release, and the follow-ups published.
   A retry rides in the next engine call with more queued interactions claimed to top it up
   to B (``PATTERNS_EXTRACT_REFILL_ROUNDS``), so a later message may find its interactions
   done, or fewer of them left. ``PATTERNS_EXTRACT_LINGER_S`` is 0: a worker with queued work
   never waits for more. Output tokens count every engine call (retries included).
2. ``raw``: ``engine.generate`` (vLLM ``LLM.chat()``) over the same prompts in calls of B, the
   first attempts' greedy sampling and token limit (the ceiling: vLLM alone).
3. ``batch_sizes``: raw output tokens/s of one call of b prompts for b in ``BATCH_SIZES``
   (b = 1 is one prompt per call: what batching saves), and the raw run's, of B.
4. ``prefix_cache``: prompt tokens, tokens served from vLLM's prefix cache and the hit rate,
   over the raw run.

Prints output tokens/s and interactions/s of each and ``extract_vs_raw`` (pipeline output
tokens/s over raw output tokens/s); ``pipeline.engine_calls`` lists each engine call's size,
retries and seconds, and ``pipeline.retries`` how many retries rode with first attempts and
how many ran in a call of retries only (and its seconds: at the end of a finite queue the last
round's retries have nothing left to ride with; a queue that never drains has no such call).
Usage:
``python bench/extract_throughput.py [N]`` (default 96).
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from benchlib import corpus, emit, scratch_database

#: Prompts per call in the batch-size sweep.
BATCH_SIZES = (1, 4, 8)


class EngineCalls:
    """The engine, recording each ``generate`` call: its size, how many of its requests were
    retries (sampled: temperature above 0), its seconds and output tokens."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[dict[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def generate(self, requests: Sequence[Any]) -> Any:
        """The wrapped engine's ``generate``, timed and counted."""
        started = time.perf_counter()
        out = self.inner.generate(requests)
        self.calls.append(
            {
                "size": len(requests),
                "retries": sum(1 for r in requests if r.temperature > 0),
                "seconds": round(time.perf_counter() - started, 2),
                "tokens_out": sum(g.tokens_out for g in out),
            }
        )
        return out

    def retries(self) -> dict[str, float]:
        """Retries that rode in a call with first attempts, those in calls of retries only (at
        the queue's end: nothing left to ride with), and the seconds of those calls."""
        alone = [c for c in self.calls if c["retries"] == c["size"]]
        rode = sum(c["retries"] for c in self.calls if c["retries"] < c["size"])
        return {
            "total": rode + sum(c["retries"] for c in alone),
            "with_first_attempts": rode,
            "alone": sum(c["retries"] for c in alone),
            "alone_seconds": round(sum(c["seconds"] for c in alone), 2),
        }


class QueueDispatcher:
    """A :class:`pipeline.dispatch.Dispatcher` (not eager) that keeps published extract tasks
    in ``tasks``, in order, as the broker's queue would, and counts the other publishes."""

    eager = False

    def __init__(self) -> None:
        self.tasks: list[list[int]] = []
        self.published: Counter[str] = Counter()

    def extract(self, interaction_ids: Sequence[int], **_: Any) -> None:
        """Queue an extract task."""
        self.tasks.append(list(interaction_ids))

    def claude(self, interaction_ids: Sequence[int], *_: Any, **__: Any) -> None:
        """Count it."""
        self.published["claude"] += len(interaction_ids)

    def analyze_local(self, interaction_ids: Sequence[int], *_: Any) -> None:
        """Count it."""
        self.published["analyze_local"] += len(interaction_ids)

    def embed(self, pattern_ids: Sequence[Any]) -> None:
        """Count it."""
        self.published["embed"] += len(pattern_ids)

    def feedback(self, interaction_ids: Sequence[int]) -> None:
        """Count it."""
        self.published["feedback"] += len(interaction_ids)

    def cross_check(self, interaction_ids: Sequence[int]) -> None:
        """Count it."""
        self.published["cross_check"] += len(interaction_ids)


def run_queue(db: Any, engine: Any, settings: Any, ids: Sequence[int]) -> dict[str, Any]:
    """Publish ``ids`` as extract tasks of ``extract_batch_size`` and run every message through
    ``extract_routed`` in turn (module docstring, 1); returns the tasks' summed counts."""
    from pipeline.extract.flow import extract_routed
    from pipeline.intake.outbox import publish_pending

    queue = QueueDispatcher()
    publish_pending(db, queue, ids, settings.extract_batch_size, check=False)
    totals: Counter[str] = Counter()
    k = 0
    while k < len(queue.tasks):
        summary = extract_routed(
            db=db,
            engine=engine,
            settings=settings,
            dispatcher=queue,
            interaction_ids=queue.tasks[k],
            lease_owner=f"task:bench-{k}",
        )
        k += 1
        totals.update(
            tasks=1,
            idle_tasks=int(summary.claimed == 0),
            extracted=summary.extracted,
            failed=summary.failed,
            refilled=summary.refilled,
            topped_up=summary.topped_up,
            to_claude=summary.to_claude,
        )
    return dict(totals)


def _sweep(engine: Any, requests: list[Any]) -> list[dict[str, Any]]:
    """Raw output tokens/s of one call of b prompts, for each b in :data:`BATCH_SIZES`."""
    points = []
    for size in BATCH_SIZES:
        if size > len(requests):
            break
        engine.reset_prefix_cache()
        started = time.perf_counter()
        out = engine.generate(requests[:size])
        seconds = time.perf_counter() - started
        tokens = sum(g.tokens_out for g in out)
        points.append(_rates(size, seconds, tokens, size))
    return points


def _rates(batch_size: int, seconds: float, tokens: int, interactions: int) -> dict[str, Any]:
    return {
        "batch_size": batch_size,
        "seconds": round(seconds, 2),
        "tokens_out": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "interactions_per_s": round(interactions / seconds, 3),
    }


def _pipeline(url: str, engine: Any, settings: Any, records: list[Any]) -> dict[str, Any]:
    """The worker path over ``records`` (stored first), module docstring, 1."""
    from pipeline.db.engine import ALL_PROJECTS, Database
    from pipeline.intake.store import store

    db = Database.from_url(url)
    with db.session(ALL_PROJECTS) as session:
        ids = store(session, records).interaction_ids
    calls = EngineCalls(engine)
    engine.reset_prefix_cache()
    started = time.perf_counter()
    totals = run_queue(db, calls, settings, ids)
    seconds = time.perf_counter() - started
    db.dispose()
    tokens = sum(c["tokens_out"] for c in calls.calls)
    return {
        "seconds": round(seconds, 2),
        "tokens_out": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "interactions_per_s": round(len(records) / seconds, 3),
        **totals,
        "llm_requests": sum(c["size"] for c in calls.calls),
        "retries": calls.retries(),
        "engine_calls": calls.calls,
        "prefix_cache": engine.prefix_cache_stats(),
    }


def _raw(engine: Any, requests: list[Any], batch_size: int) -> tuple[float, int]:
    """Seconds and output tokens of the prompts in calls of ``batch_size`` (module docstring,
    2)."""
    engine.reset_prefix_cache()
    started = time.perf_counter()
    tokens = 0
    for start in range(0, len(requests), batch_size):
        tokens += sum(g.tokens_out for g in engine.generate(requests[start : start + batch_size]))
    return time.perf_counter() - started, tokens


def main() -> None:
    """Run the measurements (module docstring) and print them as one JSON object."""
    from pipeline.extract.prompts import extraction_messages
    from pipeline.extract.schemas import extraction_json_schema
    from pipeline.intake.normalize import NormalizedInteraction
    from pipeline.intake.records import read_records
    from pipeline.llm.base import GenerationRequest
    from pipeline.llm.vllm_engine import VLLMEngine
    from pipeline.settings import Settings

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 96
    settings = Settings(
        database_url=None,
        redis_url=None,
        response_cache=False,
        vllm_prefix_caching=True,
        extract_linger_s=0,
    )
    records = [r for r in read_records([corpus()], limit=n) if isinstance(r, NormalizedInteraction)]
    batch = settings.extract_batch_size
    started = time.perf_counter()
    engine = VLLMEngine.from_settings(settings)
    load_s = time.perf_counter() - started
    schema = extraction_json_schema()
    requests = [
        GenerationRequest(
            messages=extraction_messages(r.content, max_chars=settings.extract_input_chars),
            json_schema=schema,
            max_tokens=settings.extract_max_tokens,
        )
        for r in records
    ]
    engine.generate(requests[:2])  # warm-up: first-call compilation and grammar caches
    try:
        # The pipeline first, then raw: if the machine's load drifts, it drifts against the
        # pipeline's figure, not in its favour.
        with scratch_database("pt-extract-") as url:
            pipe = _pipeline(url, engine, settings, records)
        raw_s, raw_tokens = _raw(engine, requests, batch)
        prefix = engine.prefix_cache_stats()
        sweep = _sweep(engine, requests)
    finally:
        engine.close()
    raw = _rates(batch, raw_s, raw_tokens, len(records))
    emit(
        {
            "interactions": len(records),
            "model": engine.model_name,
            "batch_size": batch,
            "refill_rounds": settings.extract_refill_rounds,
            "model_load_s": round(load_s, 1),
            "raw": {k: v for k, v in raw.items() if k != "batch_size"},
            "pipeline": pipe,
            "extract_vs_raw": round(pipe["tokens_per_s"] * raw_s / raw_tokens, 3),
            "extract_vs_raw_interactions": round(
                pipe["interactions_per_s"] * raw_s / len(records), 3
            ),
            "prefix_cache": prefix,
            "batch_sizes": [*sweep, raw],
        }
    )


if __name__ == "__main__":
    main()
