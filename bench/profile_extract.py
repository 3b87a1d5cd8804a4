"""A pyinstrument profile of the extraction worker's path (``extract_batch`` over N interactions
in one batch), for ``extract_vs_raw`` when it misses its goal: where the time goes besides the
first vLLM call (a retry, database reads and writes, validation).

Writes ``docs/profile-extract.txt`` (pyinstrument's call tree) with a header giving the seconds
of each vLLM call, measured by wrapping the engine. Usage:
``python bench/profile_extract.py [N]`` (default 32).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from benchlib import REPO, corpus, scratch_database

OUT = REPO / "docs" / "profile-extract.txt"


class _Calls:
    """The engine, recording each ``generate`` call's size and seconds."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[int, float, int]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def generate(self, requests: Any) -> Any:
        started = time.perf_counter()
        out = self.inner.generate(requests)
        tokens = sum(g.tokens_out for g in out)
        self.calls.append((len(requests), time.perf_counter() - started, tokens))
        return out


def main() -> None:
    """Profile one batch and write the call tree."""
    from pyinstrument import Profiler

    from pipeline.db.engine import ALL_PROJECTS, Database
    from pipeline.extract.batch import extract_batch
    from pipeline.intake.normalize import NormalizedInteraction
    from pipeline.intake.records import read_records
    from pipeline.intake.store import store
    from pipeline.llm.vllm_engine import VLLMEngine
    from pipeline.settings import Settings

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    settings = Settings(
        database_url=None, redis_url=None, response_cache=False, vllm_prefix_caching=True
    )
    records = [r for r in read_records([corpus()], limit=n) if isinstance(r, NormalizedInteraction)]
    inner = VLLMEngine.from_settings(settings)
    engine = _Calls(inner)
    try:
        with scratch_database("pt-profile-extract-") as url:
            db = Database.from_url(url)
            with db.session(ALL_PROJECTS) as session:
                ids = store(session, records).interaction_ids
            inner.generate(engine_warmup(records[:2], settings))
            profiler = Profiler(interval=0.005)
            profiler.start()
            result = extract_batch(db=db, engine=engine, settings=settings, interaction_ids=ids)
            profiler.stop()
            db.dispose()
    finally:
        inner.close()
    calls = "; ".join(f"{size} prompts {s:.1f} s {t} tokens" for size, s, t in engine.calls)
    header = (
        f"# extract_batch over {len(ids)} interactions: {len(result.extracted)} extracted, "
        f"{len(result.failed)} failed, {result.llm_calls} model requests\n"
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
