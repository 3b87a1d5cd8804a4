"""The HTTP API (FastAPI): GitHub webhooks, the interactions API, error-fix review, health,
readiness, metrics and costs, and the explorer at ``/ui`` (:mod:`pipeline.ui`). One router per
concern; :class:`~pipeline.api.deps.AppState` carries the database, the dispatcher and the
settings to every route through ``Depends``.

Producers only store and enqueue: a request commits its rows (``webhook_deliveries`` and
``interactions``, status ``received``) in one transaction, then publishes the extract task and
marks the interaction ``queued`` (:func:`pipeline.intake.outbox.publish_new`). No model or
embedding work runs in the request path. When publishing fails (broker down) the request still
succeeds: the interaction stays ``received`` in Postgres and the outbox sweeper publishes it.

Build the app with :func:`create_app`; ``patterns serve`` runs it under uvicorn. OpenAPI docs are
at ``/docs`` (schema at ``/openapi.json``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from pipeline.api import errorfix, feed, interactions, ops, store, webhooks
from pipeline.api.deps import AppState
from pipeline.db.engine import Database
from pipeline.dispatch import Dispatcher
from pipeline.errors import (
    ConflictError,
    DatabaseUnavailableError,
    ForbiddenError,
    NotFoundError,
)
from pipeline.settings import Settings
from pipeline.store.embedder import Embedder
from pipeline.store.live import Feed
from pipeline.ui import app as ui

log = structlog.get_logger(__name__)

#: Typed errors of the library → HTTP status.
ERROR_STATUS: dict[type[Exception], int] = {
    NotFoundError: status.HTTP_404_NOT_FOUND,
    ForbiddenError: status.HTTP_403_FORBIDDEN,
    ConflictError: status.HTTP_409_CONFLICT,
}


def create_app(
    settings: Settings,
    db: Database | None = None,
    dispatcher: Dispatcher | None = None,
    embedder: Embedder | None = None,
) -> FastAPI:
    """Build the API for ``settings``.

    Args:
        db: the database to use; default: connect (and migrate) at start-up from ``settings``,
            disposed at shutdown.
        dispatcher: publishes extract tasks (the entry point builds it on the broker); ``None``
            or an eager dispatcher: nothing is published, interactions stay ``received`` until a
            worker setup or the sweeper picks them up, so no model work ever runs in a request.
        embedder: the embedding model searches use; default: the configured one, loaded by the
            first search.
    """
    if dispatcher is not None and dispatcher.eager:
        log.warning("api_no_broker", detail="eager dispatcher: interactions are only stored")
        dispatcher = None
    state = AppState(
        settings=settings, db=db, dispatcher=dispatcher, owns_db=db is None, embedder=embedder
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if state.owns_db:
            state.db = await run_in_threadpool(Database.connect, settings)
        if state.db is not None:
            state.feed = Feed.for_url(state.db.url)
            state.feed.start()
        try:
            yield
        finally:
            if state.feed is not None:
                await state.feed.stop()
            if state.owns_db and state.db is not None:
                state.db.dispose()

    app = FastAPI(
        title="pattern-pipeline",
        version="0.1.0",
        summary="Developer activity in, patterns out.",
        lifespan=lifespan,
    )
    app.state.pipeline = state
    for router in (
        ops.router, webhooks.router, interactions.router, store.router, feed.router,
        errorfix.router,
    ):  # fmt: skip
        app.include_router(router)
    app.mount(ui.MOUNT, ui.create_ui(state))  # the explorer (pipeline/ui), its own cookie

    @app.exception_handler(DatabaseUnavailableError)
    async def database_unavailable(_: Request, exc: DatabaseUnavailableError) -> JSONResponse:
        log.error("database_unavailable", error=str(exc))
        return JSONResponse(
            {"detail": "database unavailable"}, status_code=status.HTTP_503_SERVICE_UNAVAILABLE
        )

    for error, code in ERROR_STATUS.items():
        app.add_exception_handler(error, _typed_error_handler(code))
    return app


def _typed_error_handler(code: int):  # type: ignore[no-untyped-def]
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=code)

    return handle
