"""A pyinstrument profile of the extraction worker's path, for ``extract_vs_raw`` when it misses
its goal: where the time goes besides the vLLM calls (retries, database reads and writes,
validation, claims and routing).

The path is ``bench/extract_throughput.py``'s (its module docstring, 1): N interactions
published as extract tasks of ``PATTERNS_EXTRACT_BATCH_SIZE``, each message run through
``extract_routed`` in turn, retries riding with refills. Writes ``docs/profile-extract.txt``
(pyinstrument's call tree) with a header giving each vLLM call's size, retries, seconds and
output tokens, measured by wrapping the engine. Usage:
``python bench/profile_extract.py [N]`` (default 64).
"""

from __future__ import annotations

import sys
from typing import Any

from benchlib import REPO, corpus, scratch_database
from extract_throughput import EngineCalls, run_queue

OUT = REPO / "docs" / "profile-extract.txt"


def main() -> None:
    """Profile the queue's extraction and write the call tree."""
    from pyinstrument import Profiler

    from pipeline.db.engine import ALL_PROJECTS, Database
    from pipeline.intake.normalize import NormalizedInteraction
    from pipeline.intake.records import read_records
    from pipeline.intake.store import store
    from pipeline.llm.vllm_engine import VLLMEngine
    from pipeline.settings import Settings

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    settings = Settings(
        database_url=None,
        redis_url=None,
        response_cache=False,
        vllm_prefix_caching=True,
        extract_linger_s=0,
    )
    records = [r for r in read_records([corpus()], limit=n) if isinstance(r, NormalizedInteraction)]
    inner = VLLMEngine.from_settings(settings)
    engine = EngineCalls(inner)
    try:
        with scratch_database("pt-profile-extract-") as url:
            db = Database.from_url(url)
            with db.session(ALL_PROJECTS) as session:
                ids = store(session, records).interaction_ids
            inner.generate(engine_warmup(records[:2], settings))
            profiler = Profiler(interval=0.005)
            profiler.start()
            totals = run_queue(db, engine, settings, ids)
            profiler.stop()
            db.dispose()
    finally:
        inner.close()
    calls = "; ".join(
        f"{c['size']} prompts ({c['retries']} retries) {c['seconds']:.1f} s "
        f"{c['tokens_out']} tokens"
        for c in engine.calls
    )
    header = (
        f"# extract tasks of {settings.extract_batch_size} over {len(ids)} interactions: "
        f"{totals.get('tasks', 0)} tasks ({totals.get('idle_tasks', 0)} found nothing left), "
        f"{totals.get('extracted', 0)} extracted, {totals.get('failed', 0)} failed, "
        f"{totals.get('refilled', 0)} refilled, "
        f"{sum(c['size'] for c in engine.calls)} model requests\n"
        f"# vLLM calls: {calls}\n"
        f"# wall {profiler.last_session.duration:.1f} s\n"
    )
    OUT.write_text(header + profiler.output_text(unicode=False, color=False))
    print(header + f"written: {OUT}")


def engine_warmup(records: Any, settings: Any) -> Any:
    """Two requests to warm the engine up (first-call compilation, grammar caches)."""
    from pipeline.extract.prompts import extraction_messages
    from pipeline.extract.schemas import extraction_json_schema
    from pipeline.llm.base import GenerationRequest

    schema = extraction_json_schema()
    return [
        GenerationRequest(
            messages=extraction_messages(r.content, max_chars=settings.extract_input_chars),
            json_schema=schema,
            max_tokens=settings.extract_max_tokens,
        )
        for r in records
    ]


if __name__ == "__main__":
    main()
