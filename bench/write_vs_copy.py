"""The pattern writer against psycopg ``COPY`` of the same rows, HNSW index present.

On a fresh embedded Postgres (migrated: the patterns table has its HNSW index and every other
index and trigger), pre-filled with ``BASE`` embedded patterns so the index is not empty:

- ``writer``: K stored interactions, each with an extraction result of two patterns and one
  relationship (:func:`store_fixtures.synthetic_results`), written by the pattern writer
  (:func:`pipeline.extract.bulk.write_batch` over the batch, as ``extract_batch`` does: row locks,
  twin look-ups, inserts, relationships, events, statuses), then their vectors stored and twins
  looked up as the embed task does (model call excluded: the vectors are given).
- ``copy``: the same number of pattern rows, with their vectors, by one ``COPY``.

Rows/s of each; ``write_vs_copy`` = writer rows/s over COPY rows/s. Two rounds alternate the
two on fresh projects; the best of each counts (the machine is shared). Usage:
``python bench/write_vs_copy.py [K]`` (default 250 interactions, 500 rows).
"""

from __future__ import annotations

import sys
import time
import zlib
from typing import Any

from benchlib import emit, scratch_database
from store_fixtures import (
    copy_patterns,
    embed_vectors,
    project_id,
    store_interactions,
    synthetic_results,
    synthetic_vectors,
    write_results,
)

BASE = 5000


def _writer_round(db: Any, settings: Any, k: int, tag: str) -> dict[str, float]:
    ids = store_interactions(db, f"bench/write-{tag}", k, tag)
    results = synthetic_results(k, tag)
    started = time.perf_counter()
    pattern_ids = write_results(db, settings, ids, results)
    written = time.perf_counter()
    embed_vectors(
        db,
        settings,
        pattern_ids,
        synthetic_vectors(len(pattern_ids), seed=zlib.crc32(tag.encode())),
    )
    done = time.perf_counter()
    return {
        "rows": len(pattern_ids),
        "write_s": written - started,
        "embed_s": done - written,
        "seconds": done - started,
    }


def main() -> None:
    """Run two alternating rounds of each side and print the figures."""
    from pipeline.db.engine import Database
    from pipeline.settings import Settings

    k = int(sys.argv[1]) if len(sys.argv) > 1 else 250
    settings = Settings(database_url=None, redis_url=None)
    rounds: list[dict[str, Any]] = []
    with scratch_database("pt-write-") as url:
        db = Database.from_url(url)
        store_interactions(db, "bench/base", 1, "base")
        copy_patterns(
            url,
            project_id(db, "bench/base"),
            [f"base {i}" for i in range(BASE)],
            synthetic_vectors(BASE, seed=1),
            "base",
        )
        for r in range(2):
            writer = _writer_round(db, settings, k, f"w{r}")
            store_interactions(db, f"bench/copy-{r}", 1, f"c{r}")
            titles = [p.title for res in synthetic_results(k, f"c{r}") for p in res.patterns]
            copy_s = copy_patterns(
                url,
                project_id(db, f"bench/copy-{r}"),
                titles,
                synthetic_vectors(len(titles), seed=100 + r),
                f"c{r}",
            )
            rounds.append({"writer": writer, "copy": {"rows": len(titles), "seconds": copy_s}})
        db.dispose()
    best_writer = min(rounds, key=lambda x: x["writer"]["seconds"])["writer"]
    copy_s = min(x["copy"]["seconds"] for x in rounds)
    rows = best_writer["rows"]
    writer_rate, copy_rate = rows / best_writer["seconds"], rows / copy_s
    emit(
        {
            "interactions": k,
            "rows": rows,
            "store_base_rows": BASE,
            "writer": {
                "rows_per_s": round(writer_rate, 1),
                "write_ms_per_row": round(best_writer["write_s"] * 1000 / rows, 3),
                "embed_store_ms_per_row": round(best_writer["embed_s"] * 1000 / rows, 3),
            },
            "copy": {"rows_per_s": round(copy_rate, 1)},
            "write_vs_copy": round(writer_rate / copy_rate, 3),
            "rounds": [
                {
                    "writer_s": round(x["writer"]["seconds"], 3),
                    "copy_s": round(x["copy"]["seconds"], 3),
                }
                for x in rounds
            ],
        }
    )


if __name__ == "__main__":
    main()
