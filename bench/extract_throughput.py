"""Extraction throughput: the pipeline against raw vLLM on the same prompts, in one process.

Measurements on the first N pull requests of the shared celery corpus (or the bundled sample),
with one engine loaded once; vLLM's prefix cache is emptied before each measured run, so no run
reuses another's prompts (each still reuses the shared system prompt and example within itself):

1. ``raw``: one ``engine.generate`` call with every prompt (the ceiling: vLLM alone).
2. ``pipeline``: ``extract_batch`` (what the extract worker's task runs) over the same
   interactions in batches of ``PATTERNS_EXTRACT_BATCH_SIZE`` (database reads, validation,
   retries, writes included), on a fresh embedded Postgres.
3. ``batch_sizes``: raw output tokens/s of one call of B prompts for B in ``BATCH_SIZES``
   (B = 1 is one prompt per call: what batching saves), and the raw run's, of N.
4. ``prefix_cache``: prompt tokens, tokens served from vLLM's prefix cache and the hit rate,
   over the raw run.

Prints output tokens/s and interactions/s of each and ``extract_vs_raw`` (pipeline output
tokens/s over raw output tokens/s). Usage:
``python bench/extract_throughput.py [N]`` (default 64).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from benchlib import corpus, emit, scratch_database

#: Prompts per call in the batch-size sweep.
BATCH_SIZES = (1, 4, 8)


def _sweep(engine: Any, requests: list[Any]) -> list[dict[str, Any]]:
    """Raw output tokens/s of one call of B prompts, for each B in :data:`BATCH_SIZES`."""
    points = []
    for size in BATCH_SIZES:
        if size > len(requests):
            break
        engine.reset_prefix_cache()
        started = time.perf_counter()
        out = engine.generate(requests[:size])
        seconds = time.perf_counter() - started
        tokens = sum(g.tokens_out for g in out)
        points.append(
            {
                "batch_size": size,
                "seconds": round(seconds, 2),
                "tokens_out": tokens,
                "tokens_per_s": round(tokens / seconds, 1),
                "interactions_per_s": round(size / seconds, 3),
            }
        )
    return points


def _pipeline(url: str, engine: Any, settings: Any, records: list[Any]) -> dict[str, Any]:
    """``extract_batch`` over ``records`` (stored first) in batches of the configured size."""
    from pipeline.db.engine import ALL_PROJECTS, Database
    from pipeline.extract.batch import extract_batch
    from pipeline.intake.store import store

    db = Database.from_url(url)
    with db.session(ALL_PROJECTS) as session:
        ids = store(session, records).interaction_ids
    engine.reset_prefix_cache()
    started = time.perf_counter()
    tokens = extracted = failed = calls = 0
    for start in range(0, len(ids), settings.extract_batch_size):
        result = extract_batch(
            db=db,
            engine=engine,
            settings=settings,
            interaction_ids=ids[start : start + settings.extract_batch_size],
        )
        tokens += result.tokens_out
        extracted += len(result.extracted)
        failed += len(result.failed)
        calls += result.llm_calls
    seconds = time.perf_counter() - started
    db.dispose()
    return {
        "seconds": round(seconds, 2),
        "tokens_out": tokens,
        "tokens_per_s": round(tokens / seconds, 1),
        "interactions_per_s": round(len(records) / seconds, 3),
        "extracted": extracted,
        "failed": failed,
        "llm_requests": calls,
        "prefix_cache": engine.prefix_cache_stats(),
    }


def main() -> None:
    """Run the measurements (module docstring) and print them as one JSON object."""
    from pipeline.extract.prompts import extraction_messages
    from pipeline.extract.schemas import extraction_json_schema
    from pipeline.intake.normalize import NormalizedInteraction
    from pipeline.intake.records import read_records
    from pipeline.llm.base import GenerationRequest
    from pipeline.llm.vllm_engine import VLLMEngine
    from pipeline.settings import Settings

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    settings = Settings(
        database_url=None, redis_url=None, response_cache=False, vllm_prefix_caching=True
    )
    records = [r for r in read_records([corpus()], limit=n) if isinstance(r, NormalizedInteraction)]
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
        engine.reset_prefix_cache()
        started = time.perf_counter()
        raw = engine.generate(requests)
        raw_s = time.perf_counter() - started
        prefix = engine.prefix_cache_stats()
        sweep = _sweep(engine, requests)
    finally:
        engine.close()
    raw_tokens = sum(g.tokens_out for g in raw)
    raw_rate = raw_tokens / raw_s
    emit(
        {
            "interactions": len(records),
            "model": engine.model_name,
            "batch_size": settings.extract_batch_size,
            "model_load_s": round(load_s, 1),
            "raw": {
                "seconds": round(raw_s, 2),
                "tokens_out": raw_tokens,
                "tokens_per_s": round(raw_rate, 1),
                "interactions_per_s": round(len(records) / raw_s, 3),
            },
            "pipeline": pipe,
            "extract_vs_raw": round(pipe["tokens_per_s"] / raw_rate, 3),
            "extract_vs_raw_interactions": round(
                pipe["interactions_per_s"] * raw_s / len(records), 3
            ),
            "prefix_cache": prefix,
            "batch_sizes": [
                *sweep,
                {
                    "batch_size": len(records),
                    "seconds": round(raw_s, 2),
                    "tokens_out": raw_tokens,
                    "tokens_per_s": round(raw_rate, 1),
                    "interactions_per_s": round(len(records) / raw_s, 3),
                },
            ],
        }
    )


if __name__ == "__main__":
    main()
