"""A pyinstrument profile of the pattern writer, the goal ``make bench`` does not meet
(``write_vs_copy`` ≥ 0.5): the write path and the embed task's store-and-merge step of
``bench/write_vs_copy.py`` (K interactions, two patterns each, on a store of 5,000 patterns).

Writes ``docs/profile-writer.txt`` (the call tree, pyinstrument's text output) and prints the
wall time against the profiler's CPU time: the gap is time spent waiting on Postgres.
Usage: ``python bench/profile_writer.py [K]`` (default 150).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from benchlib import REPO, scratch_database
from store_fixtures import (
    copy_patterns,
    embed_vectors,
    project_id,
    store_interactions,
    synthetic_results,
    synthetic_vectors,
    write_results,
)

OUT = REPO / "docs" / "profile-writer.txt"


def main() -> None:
    """Profile one writer round and write the call tree."""
    from pyinstrument import Profiler

    from pipeline.db.engine import Database
    from pipeline.settings import Settings

    k = int(sys.argv[1]) if len(sys.argv) > 1 else 150
    settings = Settings(database_url=None, redis_url=None)
    with scratch_database("pt-profile-") as url:
        db = Database.from_url(url)
        store_interactions(db, "bench/base", 1, "base")
        copy_patterns(
            url,
            project_id(db, "bench/base"),
            [f"base {i}" for i in range(5000)],
            synthetic_vectors(5000, seed=1),
            "base",
        )
        ids = store_interactions(db, "bench/profile", k, "profile")
        results = synthetic_results(k, "profile")
        profiler = Profiler(interval=0.001)
        started = time.perf_counter()
        profiler.start()
        pattern_ids = write_results(db, settings, ids, results)
        wrote = time.perf_counter()
        embed_vectors(db, settings, pattern_ids, synthetic_vectors(len(pattern_ids), seed=5))
        profiler.stop()
        done = time.perf_counter()
        db.dispose()
    session = profiler.last_session
    header = (
        f"# pattern writer, {len(pattern_ids)} rows ({k} interactions), store of 5,000 patterns\n"
        f"# write {wrote - started:.2f} s, embed store + merge {done - wrote:.2f} s; "
        f"wall {session.duration:.2f} s, Python CPU {session.cpu_time:.2f} s\n"
    )
    Path(OUT).write_text(header + profiler.output_text(unicode=False, color=False))
    print(header + f"written: {OUT}")


if __name__ == "__main__":
    main()
