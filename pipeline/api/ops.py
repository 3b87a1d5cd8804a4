"""Operator routes: liveness, readiness, Prometheus metrics and the day's costs."""

from __future__ import annotations

import datetime as dt

import structlog
from fastapi import APIRouter, Depends, Response, status
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from pipeline.api.deps import DB, State, admin, call
from pipeline.db.engine import ALL_PROJECTS
from pipeline.errors import DatabaseUnavailableError
from pipeline.ops.costs import CostReport, cost_report
from pipeline.ops.metrics import PipelineCollector

log = structlog.get_logger(__name__)

router = APIRouter(tags=["ops"])


@router.get("/healthz")
async def healthz(db: DB) -> dict[str, str]:
    """Liveness and database reachability: ``{"status": "ok", "database": "ok"}``, 503
    when the database does not answer."""

    def ping() -> None:
        with db.session(ALL_PROJECTS) as session:
            session.execute(text("SELECT 1"))

    await call(ping)
    return {"status": "ok", "database": "ok"}


def _readiness(state: State) -> dict[str, str]:
    parts = {"database": "ok", "broker": "not configured"}
    if state.db is None:
        parts["database"] = "not ready"
    else:
        try:
            with state.db.session(ALL_PROJECTS) as session:
                session.execute(text("SELECT 1"))
        except (SQLAlchemyError, DatabaseUnavailableError) as exc:
            parts["database"] = f"unavailable: {type(exc).__name__}"
    if state.settings.redis_url:
        import redis

        client = redis.Redis.from_url(
            state.settings.redis_url, socket_connect_timeout=2, socket_timeout=2
        )
        try:
            client.ping()
            parts["broker"] = "ok"
        except redis.RedisError as exc:
            parts["broker"] = f"unavailable: {type(exc).__name__}"
        finally:
            client.close()
    return parts


@router.get(
    "/readyz", responses={503: {"description": "the database or the broker does not answer"}}
)
async def readyz(state: State) -> JSONResponse:
    """Readiness: ``{"database": "ok", "broker": "ok"}`` when the database answers
    ``SELECT 1`` and Redis answers ``PING`` (``"not configured"`` without ``REDIS_URL``,
    which is ready too: eager mode); 503 with the failing part's error otherwise."""
    parts = await run_in_threadpool(_readiness, state)
    ready = all(v in ("ok", "not configured") for v in parts.values())
    if not ready:
        log.warning("not_ready", **parts)
    code = status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE
    return JSONResponse(parts, status_code=code)


@router.get("/metrics", response_class=PlainTextResponse)
async def metrics(state: State, db: DB) -> Response:
    """Prometheus metrics in the text exposition format (:mod:`pipeline.ops.metrics`): queue
    lengths, interactions by status, failures, LLM calls, tokens and cost, today's budget."""
    if state.metrics is None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(PipelineCollector(db, state.settings, state.settings.redis_url))
        state.metrics = registry
    body = await run_in_threadpool(generate_latest, state.metrics)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get(
    "/v1/costs",
    response_model=CostReport,
    dependencies=[Depends(admin)],
    responses={
        401: {"description": "admin token missing or wrong"},
        403: {"description": "no admin token configured (PATTERNS_ADMIN_TOKEN): closed"},
        422: {"description": "day is not a YYYY-MM-DD date"},
    },
)
async def costs(state: State, db: DB, day: dt.date | None = None) -> CostReport:
    """The UTC day's Claude budget and model spend (default: today). Needs
    ``Authorization: Bearer <PATTERNS_ADMIN_TOKEN>``; without a configured token the endpoint
    is closed (403)."""

    def report() -> CostReport:
        with db.session(ALL_PROJECTS) as session:
            return cost_report(session, settings=state.settings, day=day)

    return await call(report)
