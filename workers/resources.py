"""The resources a worker process's tasks use (database, vLLM engine, embedder, Claude engines,
dispatcher), in one :class:`Resources` object.

A worker builds it in ``worker_init`` and loads what its role needs there
(:func:`workers.worker`); an in-process run (``patterns run`` without Redis) installs one for the
length of the run (:func:`use`). Tasks read the current one with :func:`current`. Nothing is built
at import time: the vLLM engine starts processes of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from pipeline.db.engine import Database
from pipeline.dispatch import Dispatcher
from pipeline.llm.base import StructuredLLM
from pipeline.queues import Role
from pipeline.settings import Settings, get_settings
from pipeline.store.embedder import Embedder, SentenceTransformerEmbedder


class Resources:
    """What tasks need, each built on first use (thread-safe) unless handed in.

    Args:
        settings: the process's settings.
        db, engine, embedder, dispatcher: built elsewhere (the ``run`` command, tests); the
            object closes only what it built itself.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        db: Database | None = None,
        engine: StructuredLLM | None = None,
        embedder: Embedder | None = None,
        dispatcher: Dispatcher | None = None,
    ) -> None:
        self.settings = settings
        self._lock = threading.RLock()
        self._db = db
        self._engine = engine
        self._embedder = embedder
        self._dispatcher = dispatcher
        self._claude: dict[bool, StructuredLLM] = {}
        self._owned: set[str] = set()

    def db(self) -> Database:
        """The database (connected and migrated on first use)."""
        with self._lock:
            if self._db is None:
                self._db = Database.connect(self.settings)
                self._owned.add("db")
            return self._db

    def engine(self) -> StructuredLLM:
        """The local extraction engine (``PATTERNS_LOCAL_ENGINE``: vLLM in process, or an
        OpenAI-compatible server), built on first use."""
        with self._lock:
            if self._engine is None:
                from pipeline.llm.local import local_engine

                self._engine = local_engine(self.settings)
                self._owned.add("engine")
            return self._engine

    def claude_engine(self, *, batch: bool = False) -> StructuredLLM:
        """The Claude engine: Messages API, or with ``batch`` the Message Batches API.

        Raises:
            ConfigurationError: ``ANTHROPIC_API_KEY`` is not set or the model has no price.
        """
        with self._lock:
            if batch not in self._claude:
                if batch:
                    from pipeline.llm.claude_batch import ClaudeBatchEngine

                    self._claude[batch] = ClaudeBatchEngine.from_settings(self.settings, self.db())
                else:
                    from pipeline.llm.claude import ClaudeEngine

                    self._claude[batch] = ClaudeEngine.from_settings(self.settings, self.db())
            return self._claude[batch]

    def embedder(self) -> Embedder:
        """The embedding model, loaded on first use."""
        with self._lock:
            if self._embedder is None:
                self._embedder = SentenceTransformerEmbedder.from_settings(self.settings)
            return self._embedder

    def dispatcher(self) -> Dispatcher:
        """Publishes follow-up tasks on the process's Celery app."""
        with self._lock:
            if self._dispatcher is None:
                from workers.dispatch import CeleryDispatcher

                self._dispatcher = CeleryDispatcher()
            return self._dispatcher

    def preload(self, role: Role) -> None:
        """Build what ``role`` needs now, so the first task does not pay for it."""
        self.db()
        if role in (Role.EXTRACT, Role.ERRORFIX, Role.ALL):
            self.engine()
        if role in (Role.EMBED, Role.ERRORFIX, Role.ALL):
            self.embedder()

    def close(self) -> None:
        """Release what this object built: stop the vLLM engine, dispose the database pool."""
        with self._lock:
            engine = self._engine if "engine" in self._owned else None
            db = self._db if "db" in self._owned else None
            self._engine = self._db = self._embedder = None
            self._claude.clear()
            self._owned.clear()
        closer = getattr(engine, "close", None)
        if callable(closer):
            closer()
        if db is not None:
            db.dispose()


_current: Resources | None = None
_current_lock = threading.Lock()


def current() -> Resources:
    """The process's resources: the installed ones, else new ones on the process's settings
    (built lazily; an eager task outside any run)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Resources(get_settings())
        return _current


def install(resources: Resources | None) -> Resources | None:
    """Make ``resources`` the current ones (``None``: forget them); returns the previous ones.
    The caller closes what it installed."""
    global _current
    with _current_lock:
        previous, _current = _current, resources
        return previous


@contextmanager
def use(resources: Resources) -> Iterator[Resources]:
    """Install ``resources`` for the ``with`` block, then close them and put back the previous
    ones."""
    previous = install(resources)
    try:
        yield resources
    finally:
        install(previous)
        resources.close()
