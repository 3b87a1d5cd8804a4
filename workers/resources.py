"""Per-process resources (database, vLLM engine, embedder), built once and reused by tasks.

A worker builds what its role needs at start-up (:func:`preload`, from the ``worker_init``
signal); in eager mode the first task builds them. Never at import time: the vLLM engine starts
processes of its own.
"""

from __future__ import annotations

import threading

from pipeline.db.engine import Database
from pipeline.embeddings import Embedder, SentenceTransformerEmbedder
from pipeline.llm.base import StructuredLLM
from pipeline.settings import Settings, get_settings

_lock = threading.Lock()
_db: Database | None = None
_engine: StructuredLLM | None = None
_embedder: Embedder | None = None
_claude: dict[bool, StructuredLLM] = {}


def settings() -> Settings:
    """The process's settings."""
    return get_settings()


def db() -> Database:
    """The process's database (migrated on first use)."""
    global _db
    with _lock:
        if _db is None:
            _db = Database.connect(settings())
        return _db


def engine() -> StructuredLLM:
    """The process's extraction engine (vLLM), loaded on first use."""
    global _engine
    with _lock:
        if _engine is None:
            from pipeline.llm.vllm_engine import VLLMEngine

            _engine = VLLMEngine.from_settings(settings())
        return _engine


def claude_engine(*, batch: bool = False) -> StructuredLLM:
    """The process's Claude engine: Messages API, or with ``batch`` the Message Batches API.

    Raises:
        ConfigurationError: ``ANTHROPIC_API_KEY`` is not set or the model has no price.
    """
    database = db()  # takes the lock itself: not under it
    with _lock:
        if batch not in _claude:
            from pipeline.llm.claude import ClaudeBatchEngine, ClaudeEngine

            cls = ClaudeBatchEngine if batch else ClaudeEngine
            _claude[batch] = cls.from_settings(settings(), database)
        return _claude[batch]


def embedder() -> Embedder:
    """The process's embedding model, loaded on first use."""
    global _embedder
    with _lock:
        if _embedder is None:
            _embedder = SentenceTransformerEmbedder.from_settings(settings())
        return _embedder


def install(
    *, database: Database | None = None, llm: StructuredLLM | None = None,
    emb: Embedder | None = None,
) -> None:  # fmt: skip
    """Hand in resources built elsewhere (the ``run`` command, tests) instead of building them."""
    global _db, _engine, _embedder
    with _lock:
        _db = database or _db
        _engine = llm or _engine
        _embedder = emb or _embedder


def reset() -> None:
    """Forget the resources without closing them (their owner, e.g. a test fixture, closes)."""
    global _db, _engine, _embedder
    with _lock:
        _db = _engine = _embedder = None
        _claude.clear()


def close() -> None:
    """Release what this process built: stop the vLLM engine, dispose database pools."""
    global _db, _engine, _embedder
    with _lock:
        engine, _engine = _engine, None
        database, _db = _db, None
        _embedder = None
        _claude.clear()
    closer = getattr(engine, "close", None)
    if callable(closer):
        closer()
    if database is not None:
        database.dispose()


def preload(role: str) -> None:
    """Build what ``role`` needs now, so the first task does not pay for it."""
    db()
    if role in ("extract", "errorfix", "all"):
        engine()
    if role in ("embed", "errorfix", "all"):
        embedder()
