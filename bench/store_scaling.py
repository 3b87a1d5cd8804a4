"""The store's cost per interaction against its size: write, embed-and-merge and search, with the
store pre-filled with N embedded patterns.

The full-size scaling run (``patterns run`` over 100, 500 and 1,900 shared deliveries) takes hours
on a 2-core machine (extraction runs at about 0.3-0.85 interactions/s here), so by default this
bench measures what could grow with the store, without the model: for each store size N in
:data:`SIZES` (one project, N active embedded patterns of 4 types, synthetic vectors shaped like
real embeddings: :func:`store_fixtures.synthetic_vectors`, loaded by COPY and indexed as the
migration does), two rounds of K interactions of two patterns and one relationship each
(:func:`store_fixtures.synthetic_results`) go through

- ``write``: the pattern writer (``pipeline.extract.bulk.write_batch``: twin look-ups by title,
  inserts, relationships, events, statuses), in one batch as ``extract_batch`` writes;
- ``embed``: storing their vectors and looking up and merging embedding twins, as the embed task
  does after its model call; a quarter of the new patterns lie within the merge distance of a
  stored pattern of their type, so merges happen;
- ``search``: one :func:`pipeline.store.search.search` per interaction (k = 10).

It prints milliseconds per interaction of each at each N (each part's faster round), and
``scaling_cost_growth``: the total at the largest N over the total at the smallest (1.0: flat).
The model's share of an interaction's cost does not depend on the store
(``bench/extract_throughput.py``).

``--full`` (or ``BENCH_FULL=1``): sizes up to 100k, and ``patterns run --json`` over the first
100, 500 and 1,900 shared deliveries, each on a fresh embedded database (interactions/s and
output tokens/s of the whole pipeline). Usage: ``python bench/store_scaling.py [--full] [K]``.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import CORPUS, emit, psycopg_url, scratch_database
from store_fixtures import (
    TYPES,
    copy_patterns,
    embed_vectors,
    letters,
    project_id,
    store_interactions,
    synthetic_results,
    synthetic_vectors,
    write_results,
)

SIZES = (1_000, 5_000, 20_000)
FULL_SIZES = (1_000, 10_000, 100_000)
FULL_RUNS = (100, 500, 1900)
PROJECT = "bench/scaling"


def _grow(url: str, project: Any, have: int, want: int) -> np.ndarray:
    """Add patterns ``have``..``want`` to the store (index dropped, COPY, index rebuilt as the
    migration builds it); returns the added vectors."""
    import psycopg

    vectors = synthetic_vectors(want - have, seed=want)
    with psycopg.connect(psycopg_url(url), autocommit=True) as conn:
        conn.execute("DROP INDEX IF EXISTS ix_patterns_embedding_hnsw")
        copy_patterns(
            url, project, [f"stored {letters(i)}" for i in range(have, want)], vectors, "store"
        )
        conn.execute("SET maintenance_work_mem = '1GB'")
        conn.execute(
            "CREATE INDEX ix_patterns_embedding_hnsw ON patterns USING hnsw "
            "(embedding vector_cosine_ops)"
        )
        conn.execute("VACUUM ANALYZE patterns")
    return vectors


def _new_vectors(results: list[Any], stored: np.ndarray, seed: int) -> np.ndarray:
    """Vectors for the new patterns: fresh ones, but every fourth a stored pattern's of the same
    type plus a little noise (cosine distance about 0.05), so it merges into it."""
    rng = np.random.default_rng(seed)
    types = [p.type for r in results for p in r.patterns]
    out = synthetic_vectors(len(types), seed=seed)
    for i, t in enumerate(types):
        if i % 4 == 0:
            j = TYPES.index(t) + 4 * int(rng.integers(0, len(stored) // 4))
            v = stored[j] + 0.015 * rng.standard_normal(stored.shape[1]).astype(np.float32)
            out[i] = v / np.linalg.norm(v)
    return out


def _round(db: Any, settings: Any, k: int, n: int, stored: np.ndarray, r: int) -> dict[str, Any]:
    """One round of ``k`` interactions at store size ``n``: ms per interaction of each part."""
    from pipeline.store.search import search

    tag = f"s{letters(n)}r{letters(r)}"
    ids = store_interactions(db, PROJECT, k, tag)
    results = synthetic_results(k, tag, seed=n + r)
    vectors = _new_vectors(results, stored, seed=n + r)
    queries = synthetic_vectors(k, seed=n + r + 1)
    project = project_id(db, PROJECT)
    started = time.perf_counter()
    pattern_ids = write_results(db, settings, ids, results)
    wrote = time.perf_counter()
    merged = embed_vectors(db, settings, pattern_ids, vectors)
    embedded = time.perf_counter()
    for q in queries:
        search(db, q.tolist(), project_id=project, k=10)
    searched = time.perf_counter()
    return {
        "write": (wrote - started) * 1000 / k,
        "embed_merge": (embedded - wrote) * 1000 / k,
        "search": (searched - embedded) * 1000 / k,
        "new_patterns": len(pattern_ids),
        "merges": merged,
    }


def _step(url: str, db: Any, settings: Any, k: int, n: int, stored: np.ndarray) -> dict[str, Any]:
    """Two rounds at store size ``n``; each part's figure is its faster round (the machine is
    shared: the less disturbed round is the fairer)."""
    rounds = [_round(db, settings, k, n, stored, r) for r in range(2)]
    ms = {key: min(x[key] for x in rounds) for key in ("write", "embed_merge", "search")}
    return {
        "store_patterns": n,
        "interactions": k,
        "rounds": len(rounds),
        "new_patterns": sum(x["new_patterns"] for x in rounds),
        "embedding_merges": sum(x["merges"] for x in rounds),
        **{f"{key}_ms": round(v, 2) for key, v in ms.items()},
        "total_ms_per_interaction": round(sum(ms.values()), 2),
    }


def _full_runs() -> list[dict[str, Any]]:
    """``patterns run --json`` over the first 100, 500 and 1,900 deliveries, each on a fresh
    embedded database."""
    points = []
    patterns = Path(sys.executable).with_name("patterns")
    with gzip.open(CORPUS, "rt", encoding="utf-8") as fh:
        lines = fh.readlines()
    for n in FULL_RUNS:
        with tempfile.TemporaryDirectory(prefix="pt-scale-") as tmp:
            path = Path(tmp) / "input.jsonl"
            path.write_text("".join(lines[:n]))
            env = {k: v for k, v in os.environ.items() if not k.startswith("PATTERNS_")}
            env["PATTERNS_DATA_DIR"] = tmp
            started = time.perf_counter()
            out = subprocess.run(
                [str(patterns), "run", str(path), "--json"],
                env=env,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            seconds = time.perf_counter() - started
        summary = json.loads(out.strip().splitlines()[-1])
        points.append(
            {
                "deliveries": n,
                "seconds": round(seconds, 1),
                "interactions": summary["interactions"],
                "interactions_per_s": round(summary["interactions"] / seconds, 4),
                "tokens_out_per_s": round(summary.get("tokens_out", 0) / seconds, 1),
                "patterns": summary["patterns"],
            }
        )
    return points


def main() -> None:
    """Grow the store step by step, measure each step, print the figures."""
    from pipeline.db.engine import Database
    from pipeline.settings import Settings

    full = "--full" in sys.argv or os.environ.get("BENCH_FULL") == "1"
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    k = int(args[0]) if args else 40
    settings = Settings(database_url=None, redis_url=None)
    points = []
    with scratch_database("pt-scaling-") as url:
        db = Database.from_url(url)
        store_interactions(db, PROJECT, 1, "seed")
        project = project_id(db, PROJECT)
        have, stored = 0, np.zeros((0, 384), dtype=np.float32)
        for n in FULL_SIZES if full else SIZES:
            stored = np.concatenate([stored, _grow(url, project, have, n)])
            have = n
            points.append(_step(url, db, settings, k, n, stored))
            print(points[-1], file=sys.stderr, flush=True)
        db.dispose()
    result: dict[str, Any] = {
        "mode": "full" if full else "reduced",
        "points": points,
        "scaling_cost_growth": round(
            points[-1]["total_ms_per_interaction"] / points[0]["total_ms_per_interaction"], 3
        ),
    }
    if full:
        result["pipeline_runs"] = _full_runs()
    emit(result)


if __name__ == "__main__":
    main()
