"""What the routes share: the typed application state and the dependencies that read it
(database, dispatcher, settings), the project API key and the admin token, and a helper that runs
blocking work in the thread pool.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry
from starlette.concurrency import run_in_threadpool

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.dispatch import Dispatcher
from pipeline.intake.apikeys import Principal, authenticate
from pipeline.settings import Settings
from pipeline.store.embedder import Embedder, SentenceTransformerEmbedder
from pipeline.store.live import Feed

T = TypeVar("T")


@dataclass
class Gate:
    """At most ``limit`` holders at once, without waiting: :meth:`enter` is false when full.

    For the event loop's own code (the webhook route's body reading): not thread-safe, and
    needs none there, since the loop runs one coroutine step at a time.
    """

    limit: int
    held: int = 0

    def enter(self) -> bool:
        """Take a slot; false (nothing taken) when all ``limit`` are held."""
        if self.held >= self.limit:
            return False
        self.held += 1
        return True

    def leave(self) -> None:
        """Give back a slot taken by :meth:`enter`."""
        self.held -= 1


@dataclass
class AppState:
    """Everything a request may use, built once per application (``app.state.pipeline``).

    ``db`` is ``None`` until start-up has connected; ``dispatcher`` is ``None`` when no broker is
    configured (interactions are then only stored, for the sweeper or a later run to publish);
    ``embedder`` is loaded by the first search; ``feed`` wakes the live event streams;
    ``webhook_gate`` bounds the webhook bodies read and verified at once
    (``settings.webhook_max_concurrency``).
    """

    settings: Settings
    db: Database | None = None
    dispatcher: Dispatcher | None = None
    owns_db: bool = False
    metrics: CollectorRegistry | None = field(default=None, repr=False)
    embedder: Embedder | None = field(default=None, repr=False)
    feed: Feed | None = field(default=None, repr=False)
    _embedder_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    webhook_gate: Gate = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.webhook_gate = Gate(self.settings.webhook_max_concurrency)

    def load_embedder(self) -> Embedder:
        """The embedding model searches encode queries with, loaded on first use (blocking)."""
        with self._embedder_lock:
            if self.embedder is None:
                self.embedder = SentenceTransformerEmbedder.from_settings(self.settings)
            return self.embedder


def get_state(request: Request) -> AppState:
    """The application's :class:`AppState`."""
    state: AppState = request.app.state.pipeline
    return state


State = Annotated[AppState, Depends(get_state)]


def get_db(state: State) -> Database:
    """The database, or 503 while start-up has not connected it."""
    if state.db is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database not ready")
    return state.db


DB = Annotated[Database, Depends(get_db)]


async def get_embedder(state: AppState) -> Embedder:
    """The application's embedding model (loaded in the thread pool on first use)."""
    if state.embedder is not None:
        return state.embedder
    return await run_in_threadpool(state.load_embedder)


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run blocking ``fn`` in the thread pool. A :class:`~pipeline.errors.DatabaseUnavailableError`
    it raises becomes a 503 through the application's exception handler."""
    return await run_in_threadpool(fn, *args, **kwargs)


_bearer = HTTPBearer(auto_error=False, description="A project API key (`patterns apikey`).")


async def principal(
    db: DB, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    """The project of the request's API key (``Authorization: Bearer pp_...``); 401 when it is
    missing, unknown or revoked."""
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing API key", headers={"WWW-Authenticate": "Bearer"}
        )

    def lookup() -> Principal | None:
        # Spans projects on purpose: the key is what names the project.
        with db.session(ALL_PROJECTS) as session:
            return authenticate(session, credentials.credentials)

    found = await call(lookup)
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    return found


Caller = Annotated[Principal, Depends(principal)]

_admin_bearer = HTTPBearer(
    auto_error=False, description="settings.admin_token (PATTERNS_ADMIN_TOKEN)."
)


async def admin(
    state: State,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_admin_bearer)],
) -> None:
    """Operator endpoints, closed by default: 403 while no admin token is configured
    (``PATTERNS_ADMIN_TOKEN`` unset or empty), whatever the request carries; else the token must
    be sent as ``Authorization: Bearer <token>`` (compared in constant time), 401 otherwise."""
    token = state.settings.admin_token
    if token is None or not token.get_secret_value():
        raise HTTPException(
            status.HTTP_403_FORBIDDEN,
            "operator endpoints are disabled: set PATTERNS_ADMIN_TOKEN to enable them",
        )
    if credentials is None or not hmac.compare_digest(
        credentials.credentials.encode(), token.get_secret_value().encode()
    ):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "missing or wrong admin token",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
