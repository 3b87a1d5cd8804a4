"""Embedding throughput: the embed task against ``SentenceTransformer.encode`` alone, and the
embedding backends against torch, in one process.

1. ``embed_vs_raw``: texts/s of :func:`pipeline.store.embed.embed_patterns` (read the patterns,
   encode, write the vectors, merge twins) over N stored patterns, over texts/s of one
   ``SentenceTransformer.encode`` of the same texts with the same model and batch size; two
   rounds interleaved, the best of each. On a shared 2-core machine the model's own time varies
   by ±30 % between two identical calls, more than the task adds, so ``embed_vs_raw`` charges the
   task its measured overhead (its wall time less the time of its own ``encode`` call) on top of
   the baseline: ``raw / (raw + overhead)``; ``embed_vs_raw_wall`` is the plain ratio of the two
   wall times.
2. Backends, on the same texts: torch float32 (the reference), torch with dynamic int8
   quantisation of its Linear layers, and ONNX Runtime float32 and int8 (the model exported with
   ``torch.onnx.export``, quantised with ``onnxruntime.quantization``) where ``onnxruntime`` is
   installed. Each: texts/s and the mean and minimum cosine similarity of its vectors to torch's.
   sentence-transformers' own ``backend="onnx"``/``"openvino"`` need ``optimum-onnx`` /
   ``optimum-intel``, which cannot be installed beside vLLM's CPU build (docs/PERFORMANCE.md).

Texts: titles and descriptions of the shared corpus's pull requests (``"<title>. <body>"``, cut to
400 characters, as patterns' texts are short). Usage: ``python bench/embed_throughput.py [N]``
(default 128).
"""

from __future__ import annotations

import gzip
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import corpus, emit, scratch_database, timed


def _texts(n: int) -> list[str]:
    """``n`` short texts from the corpus's pull requests (cycled)."""
    out: list[str] = []
    with gzip.open(corpus(), "rt", encoding="utf-8") as fh:
        for line in fh:
            pr = json.loads(line).get("payload", {}).get("pull_request") or {}
            if pr.get("title"):
                out.append(f"{pr['title']}. {(pr.get('body') or '').strip()}"[:400])
    return [out[i % len(out)] + ("" if i < len(out) else f" ({i})") for i in range(n)]


def _store_patterns(db: Any, texts: list[str]) -> list[uuid.UUID]:
    """Insert one pattern per text (no embedding), each from an interaction of its own, with
    distinct titles, so the embed task does real work and each title is its own idea."""
    from sqlalchemy import text as sql

    from pipeline.db.engine import ALL_PROJECTS
    from pipeline.intake.normalize import NormalizedInteraction
    from pipeline.intake.store import store

    items = [
        NormalizedInteraction(
            project="bench/embed",
            source="api",
            content=t,
            kind="note",
            idempotency_key=f"embed-{i}",
        )
        for i, t in enumerate(texts)
    ]
    with db.session(ALL_PROJECTS) as s:
        ids = store(s, items).interaction_ids
        rows = s.execute(
            sql(
                "INSERT INTO patterns (project_id, type, title, content, source_interaction_id,"
                " extraction_method, extraction_key) SELECT i.project_id, 'performance',"
                " 'pattern ' || i.id, jsonb_build_object('description', i.content), i.id,"
                " 'local_llm', 'bench' FROM interactions i WHERE i.id = ANY(:ids) RETURNING id"
            ),
            {"ids": ids},
        ).all()
    return [r[0] for r in rows]


class _Timed:
    """An embedder that adds up the seconds its ``encode`` calls take."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.model_name, self.dim, self.seconds = (
            inner,
            inner.model_name,
            inner.dim,
            0.0,
        )

    def encode(self, texts: Any) -> np.ndarray:
        started = time.perf_counter()
        try:
            return np.asarray(self.inner.encode(texts))
        finally:
            self.seconds += time.perf_counter() - started


def _clear_embeddings(db: Any) -> None:
    from sqlalchemy import text as sql

    from pipeline.db.engine import ALL_PROJECTS

    with db.session(ALL_PROJECTS) as s:
        s.execute(sql("UPDATE patterns SET embedding = NULL, embedding_model = NULL"))


def _agreement(reference: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """Mean and minimum row-wise cosine similarity of two sets of unit vectors."""
    other = other / np.linalg.norm(other, axis=1, keepdims=True)
    sims = np.sum(reference * other, axis=1)
    return float(sims.mean()), float(sims.min())


def _backends(
    reference: np.ndarray, texts: list[str], settings: Any, torch_rate: float
) -> dict[str, dict[str, Any]]:
    """Texts/s and cosine agreement with ``reference`` (torch float32's vectors, encoded at
    ``torch_rate`` texts/s) of each backend of :func:`embed_backends.backend_embedders`."""
    from embed_backends import backend_embedders

    from pipeline.llm.local_models import resolve_embedding_model

    n, batch = len(texts), settings.embedding_batch_size
    backends: dict[str, dict[str, Any]] = {
        "torch": {"texts_per_s": round(torch_rate, 1), "cosine_mean": 1.0, "cosine_min": 1.0}
    }
    path = resolve_embedding_model(settings.embedding_model)
    with tempfile.TemporaryDirectory(prefix="pt-embed-onnx-") as tmp:
        for name, build in backend_embedders(path, Path(tmp)).items():
            try:
                load_s, other = timed(build)
            except Exception as exc:  # a backend that cannot load here is reported, not fatal
                backends[name] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
                continue
            other.encode(texts[:batch])  # warm-up
            seconds, vectors = timed(lambda o=other: o.encode(texts))  # type: ignore[misc]
            mean, low = _agreement(reference, vectors)
            backends[name] = {
                "texts_per_s": round(n / seconds, 1),
                "load_s": round(load_s, 1),
                "cosine_mean": round(mean, 5),
                "cosine_min": round(low, 5),
            }
    return backends


def main() -> None:
    """Measure the task against the model, then the backends; print the figures."""
    from pipeline.db.engine import Database
    from pipeline.settings import Settings
    from pipeline.store.embed import embed_patterns
    from pipeline.store.embedder import SentenceTransformerEmbedder, pattern_text

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 128
    settings = Settings(database_url=None, redis_url=None)
    embedder = SentenceTransformerEmbedder.from_settings(settings)
    texts = _texts(n)
    batch = settings.embedding_batch_size
    embedder.encode(texts[:batch])  # warm-up

    with scratch_database("pt-embed-") as url:
        db = Database.from_url(url)
        ids = _store_patterns(db, texts)
        # The embed task's texts are what it builds from the rows ("<title>. <description>").
        task_texts = [pattern_text(f"pattern {i}", {"description": t}) for i, t in enumerate(texts)]
        # Interleaved, best of 2 each: the machine is shared, so the least disturbed run of
        # each side is the fairest. The baseline: the same embedder's model alone
        # (SentenceTransformer.encode); between task runs the vectors are cleared.
        raw_s = task_s = inner_s = float("inf")
        timed_embedder = _Timed(embedder)
        for _ in range(2):
            raw_s = min(raw_s, timed(lambda: embedder.encode(task_texts))[0])
            _clear_embeddings(db)
            timed_embedder.seconds = 0.0
            seconds, result = timed(
                lambda: embed_patterns(
                    db=db, embedder=timed_embedder, settings=settings, pattern_ids=ids
                )
            )
            if seconds < task_s:
                task_s, inner_s = seconds, timed_embedder.seconds
        db.dispose()
    assert result.embedded == len(ids), result

    # torch (the reference) is the embedder itself: its figures are the baseline's.
    backends = _backends(embedder.encode(texts), texts, settings, n / raw_s)
    overhead = max(0.0, task_s - inner_s)  # the task's own work: reads, writes, merges
    torch_rate = backends.get("torch", {}).get("texts_per_s") or n / raw_s
    for figures in backends.values():
        if "texts_per_s" in figures:
            figures["speedup_vs_torch"] = round(figures["texts_per_s"] / torch_rate, 3)
    eligible = {k: v for k, v in backends.items() if v.get("cosine_min", 0) >= 0.99}
    emit(
        {
            "texts": n,
            "batch_size": batch,
            "model": embedder.model_name,
            "backend_in_use": getattr(embedder, "backend", "torch"),
            "raw": {"seconds": round(raw_s, 3), "texts_per_s": round(n / raw_s, 1)},
            "task": {
                "seconds": round(task_s, 3),
                "texts_per_s": round(n / task_s, 1),
                "encode_seconds": round(inner_s, 3),
                "overhead_seconds": round(overhead, 3),
                "embedded": result.embedded,
                "merged": result.merged,
            },
            "embed_vs_raw": round(raw_s / (raw_s + overhead), 3),
            "embed_vs_raw_wall": round(raw_s / task_s, 3),
            "backends": backends,
            "fastest_backend_with_cosine_ge_0_99": max(
                eligible, key=lambda k: eligible[k]["texts_per_s"]
            )
            if eligible
            else None,
        }
    )


if __name__ == "__main__":
    main()
