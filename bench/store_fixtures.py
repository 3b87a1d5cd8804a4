"""Synthetic store contents for the store benches (write, search, scaling).

- :func:`synthetic_vectors`: unit 384-d vectors drawn from a Gaussian with the mean and
  covariance of real MiniLM embeddings of 512 corpus texts (``bench/.cache/corpus-embeddings.npy``,
  float16, made on first use or by ``python bench/store_fixtures.py``), so neighbourhoods look
  like real patterns' rather than like uniform noise on the sphere (much harder for HNSW).
- :func:`synthetic_results`: extraction results of two patterns and one relationship each, with
  titles unique to ``tag``.
- :func:`copy_patterns`: N active, embedded patterns into one project with psycopg ``COPY``.
- :func:`write_results`: the pattern writer's path for stored interactions
  (:func:`pipeline.extract.bulk.write_batch` over the batch in one transaction, as
  ``extract_batch`` does), then storing given vectors and merging twins as the embed task does
  (:func:`pipeline.store.embed` without the model).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
from benchlib import REPO, psycopg_url

DIM = 384
#: Real MiniLM embeddings of corpus texts (float16), the shape synthetic vectors are drawn in.
SAMPLE = REPO / "bench" / ".cache" / "corpus-embeddings.npy"
SAMPLE_TEXTS = 512
TYPES = ("bug_fix", "performance", "configuration", "testing")
WORDS = [
    "cache",
    "retry",
    "worker",
    "queue",
    "broker",
    "timeout",
    "result",
    "backend",
    "beat",
    "schedule",
    "task",
    "chord",
    "group",
    "chain",
    "signal",
    "ack",
    "prefetch",
    "pool",
    "redis",
    "rabbitmq",
    "serializer",
    "json",
    "pickle",
    "memory",
    "leak",
    "shutdown",
    "restart",
    "config",
    "logging",
    "event",
    "monitor",
    "eta",
    "countdown",
    "revoke",
]


def synthetic_vectors(n: int, seed: int) -> np.ndarray:
    """``n`` unit vectors (float32, shape ``(n, 384)``) shaped like real embeddings (the sample
    of real ones is made on first use, :func:`make_sample`)."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((n, DIM)).astype(np.float32)
    if not SAMPLE.is_file():
        make_sample()
    real = np.load(SAMPLE).astype(np.float64)
    mean = real.mean(axis=0)
    cov = np.cov(real, rowvar=False) + 1e-4 * np.eye(DIM)
    x = (z @ np.linalg.cholesky(cov).T.astype(np.float32)) + mean.astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def letters(i: int) -> str:
    """``i`` spelt in letters (``0`` → ``a``, ``26`` → ``ba``): titles without digits, which
    would count as identifiers and keep them from ever merging by embedding."""
    out = ""
    while True:
        i, r = divmod(i, 26)
        out = chr(97 + r) + out
        if i == 0:
            return out


def synthetic_results(k: int, tag: str, seed: int = 0) -> list[Any]:
    """``k`` extraction results, each two patterns (titles unique to ``tag``) and an edge."""
    from pipeline.extract.schemas import ExtractionResult

    rng = np.random.default_rng(seed)
    out = []
    for i in range(k):
        words = [str(w) for w in rng.choice(WORDS, 6)]
        a, b = (
            f"{' '.join(words[:3])} {tag} {letters(i)} one",
            f"{' '.join(words[3:])} {tag} {letters(i)} two",
        )
        out.append(
            ExtractionResult.model_validate(
                {
                    "trivial": False,
                    "patterns": [
                        {
                            "type": TYPES[i % 4],
                            "title": a,
                            "description": f"Use {words[0]} with "
                            f"{words[1]} to avoid {words[2]} problems.",
                            "evidence": f"{words[0]} fix",
                            "confidence": 0.8,
                        },
                        {
                            "type": TYPES[(i + 1) % 4],
                            "title": b,
                            "description": f"Prefer {words[3]} over {words[4]}.",
                            "evidence": f"{words[5]} change",
                            "confidence": 0.7,
                        },
                    ],
                    "relationships": [
                        {
                            "source": a,
                            "target": b,
                            "type": "related_to",
                            "strength": 0.6,
                            "confidence": 0.6,
                        }
                    ],
                }
            )
        )
    return out


def store_interactions(db: Any, project: str, k: int, tag: str) -> list[int]:
    """Store ``k`` interactions of ``project`` (status ``received``); returns their ids."""
    from pipeline.db.engine import ALL_PROJECTS
    from pipeline.intake.normalize import NormalizedInteraction
    from pipeline.intake.store import store

    items = [
        NormalizedInteraction(
            project=project,
            source="api",
            kind="note",
            content=f"interaction {tag} {i}",
            idempotency_key=f"{tag}-{i}",
        )
        for i in range(k)
    ]
    with db.session(ALL_PROJECTS) as s:
        return list(store(s, items).interaction_ids)


def project_id(db: Any, project: str) -> uuid.UUID:
    """The id of the project named ``project``."""
    from sqlalchemy import text

    from pipeline.db.engine import ALL_PROJECTS

    with db.session(ALL_PROJECTS) as s:
        return uuid.UUID(
            str(
                s.execute(
                    text("SELECT id FROM projects WHERE name = :n"), {"n": project}
                ).scalar_one()
            )
        )


def copy_patterns(
    url: str, project: uuid.UUID, titles: Sequence[str], vectors: np.ndarray, key: str
) -> float:
    """COPY active, embedded patterns (one per title, types cycling) into ``project``; returns
    the seconds the COPY took (connection set-up excluded)."""
    import time

    import psycopg
    from pgvector.psycopg import register_vector
    from psycopg.types.json import Jsonb

    cols = (
        "project_id, type, title, content, confidence, extraction_method, extraction_model,"
        " extraction_key, is_active, embedding, embedding_model"
    )
    with psycopg.connect(psycopg_url(url)) as conn:
        register_vector(conn)
        started = time.perf_counter()
        with conn.cursor() as cur, cur.copy(f"COPY patterns ({cols}) FROM STDIN") as copy:
            for i, (title, vec) in enumerate(zip(titles, vectors, strict=True)):
                copy.write_row(
                    (
                        project,
                        TYPES[i % 4],
                        title,
                        Jsonb({"description": f"about {title}", "evidence": "x"}),
                        0.8,
                        "local_llm",
                        "bench",
                        key,
                        True,
                        vec,
                        "all-MiniLM-L6-v2",
                    )
                )
        conn.commit()
        return time.perf_counter() - started


def write_results(db: Any, settings: Any, ids: Sequence[int], results: Sequence[Any]) -> list[Any]:
    """The writer's path for ``results`` of interactions ``ids`` (module docstring, first half);
    returns the new pattern ids."""
    from pipeline.db.engine import ALL_PROJECTS
    from pipeline.db.status import ExtractionMethod
    from pipeline.extract.bulk import write_batch
    from pipeline.extract.write import ExtractionBatchResult, Provenance, Work
    from pipeline.store.events import lock_projects

    out = ExtractionBatchResult()
    source = Provenance("bench-writer", "bench", ExtractionMethod.LOCAL_LLM, settings)
    with db.session(ALL_PROJECTS) as session:
        # extract_batch has its rows (and so their projects) read before it writes.
        project_of = {
            iid: pid
            for iid, pid in session.execute(
                _sql("SELECT id, project_id FROM interactions WHERE id = ANY(:ids)"),
                {"ids": list(ids)},
            )
        }
        lock_projects(session, set(project_of.values()))
        works = [
            (Work(iid, 1, r, None), project_of[iid]) for iid, r in zip(ids, results, strict=True)
        ]
        write_batch(session, works, source, out)
    return out.pattern_ids


def embed_vectors(db: Any, settings: Any, pattern_ids: Sequence[Any], vectors: np.ndarray) -> int:
    """Store ``vectors`` for ``pattern_ids`` and merge twins, as the embed task does after its
    model call; returns the merges."""
    from pipeline.store import embed

    class Fixed:
        model_name, dim = "all-MiniLM-L6-v2", DIM

        def encode(self, texts: Sequence[str]) -> np.ndarray:
            return vectors[: len(texts)]

    return embed.embed_patterns(
        db=db, embedder=Fixed(), settings=settings, pattern_ids=list(pattern_ids)
    ).merged


def _sql(statement: str) -> Any:
    from sqlalchemy import text

    return text(statement)


def make_sample() -> None:
    """Embed :data:`SAMPLE_TEXTS` corpus texts with the packaged MiniLM into :data:`SAMPLE`."""
    from embed_throughput import _texts

    from pipeline.settings import Settings
    from pipeline.store.embedder import SentenceTransformerEmbedder

    embedder = SentenceTransformerEmbedder.from_settings(Settings(database_url=None))
    SAMPLE.parent.mkdir(parents=True, exist_ok=True)
    np.save(SAMPLE, embedder.encode(_texts(SAMPLE_TEXTS)).astype(np.float16))


if __name__ == "__main__":
    make_sample()
