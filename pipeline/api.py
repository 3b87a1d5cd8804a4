"""The HTTP API (FastAPI): GitHub webhooks, the interactions API, health, readiness and metrics.

Producers only store and enqueue: a request commits its rows (``webhook_deliveries`` and
``interactions``, status ``received``) in one transaction, then publishes the extract task and
marks the interaction ``queued`` (:func:`pipeline.runner.publish_pending`). No model or embedding
work runs in the request path. When publishing fails (broker down) the request still succeeds:
the interaction stays ``received`` in Postgres and the outbox sweeper publishes it later.

Build the app with :func:`create_app`; ``patterns serve`` runs it under uvicorn. OpenAPI docs are
at ``/docs`` (schema at ``/openapi.json``).

Status codes of ``POST /webhooks/github``: 202 stored and enqueued (or stored, when publishing
failed or no broker is configured); 200 ``ping``, an event or action with nothing to learn from,
or a repeated ``X-GitHub-Delivery``; 400 malformed JSON or missing GitHub headers; 401 missing or
wrong ``X-Hub-Signature-256``; 413 body over ``max_request_bytes``; 422 well-formed JSON that is
not a usable delivery of its event; 503 no webhook secret configured or the database is down.
"""

import datetime as dt
import hmac
import json
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypeVar

import structlog
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator
from sqlalchemy import select, text
from sqlalchemy.exc import OperationalError as SQLOperationalError
from sqlalchemy.exc import SQLAlchemyError
from starlette.concurrency import run_in_threadpool

from pipeline.apikeys import Principal, authenticate
from pipeline.costs import CostReport, cost_report
from pipeline.db.engine import Database
from pipeline.db.models import TypeScriptError, WebhookDelivery
from pipeline.dispatch import Dispatcher
from pipeline.errorfix import review
from pipeline.errors import MalformedInputError, PipelineError
from pipeline.ingest import (
    NormalizedInteraction,
    SkippedDelivery,
    normalize_delivery,
    normalize_interaction,
    store,
)
from pipeline.metrics import PipelineCollector
from pipeline.runner import publish_pending
from pipeline.settings import Settings
from pipeline.webhooks import SIGNATURE_HEADER, verify_signature

log = structlog.get_logger(__name__)

#: Most interactions accepted in one bulk request.
MAX_BULK_ITEMS = 1000
#: First key of the two-key advisory lock taken per delivery id ("hook").
DELIVERY_LOCK_NAMESPACE = 0x686F6F6B
#: Longest ``Idempotency-Key`` accepted (the stored key adds ``api:<project uuid>:``).
MAX_IDEMPOTENCY_KEY = 200

T = TypeVar("T")


# --- request and response models --------------------------------------------------------------


class InteractionIn(BaseModel):
    """One interaction submitted to ``POST /v1/interactions``. The project is the API key's."""

    model_config = ConfigDict(extra="forbid")

    content: str = Field(min_length=1, max_length=1_000_000, description="The text to learn from.")
    kind: str = Field(
        default="conversation", min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$"
    )
    project: str | None = Field(
        default=None, description="Optional; must be the API key's project when given."
    )
    author: str | None = Field(default=None, max_length=256)
    external_id: str | None = Field(default=None, max_length=2048)
    occurred_at: dt.datetime | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_IDEMPOTENCY_KEY,
        description="Bulk items: a key per item (a single request uses the Idempotency-Key "
        "header). Without one, the key is a hash of project, kind and content.",
    )

    @field_validator("content")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("content is blank")
        return value


class InteractionOut(BaseModel):
    """One stored interaction: ``created`` is false when its idempotency key was already used."""

    id: int
    created: bool
    status: str


class BulkOut(BaseModel):
    """The result of a bulk submission, items in request order."""

    created: int
    existing: int
    items: list[InteractionOut]


class ReviewOut(BaseModel):
    """The review recorded for a TypeScript error's suggested fix."""

    id: int
    status: Literal["accepted", "rejected"]


class WebhookOut(BaseModel):
    """What the webhook endpoint did with a delivery."""

    delivery: str
    status: str = Field(description="queued | stored | duplicate | skipped | pong")
    interaction_id: int | None = None
    reason: str | None = None


_ITEMS = TypeAdapter(list[InteractionIn])


# --- the pieces the endpoints call (sync, run in the thread pool) -----------------------------


def _publish(
    db: Database, dispatcher: Dispatcher | None, ids: list[int], settings: Settings
) -> bool:
    """Publish the new interactions; on a broker failure leave them to the sweeper."""
    if not ids or dispatcher is None:
        return False
    try:
        publish_pending(db, dispatcher, ids, settings.extract_batch_size, check=False)
    except PipelineError as exc:
        log.warning("publish_failed_left_to_sweeper", interactions=ids, error=str(exc))
        return False
    return True


def store_delivery(db: Database, event: str, delivery_id: str, payload: Any) -> WebhookOut:
    """Store one delivery (``webhook_deliveries`` and, when it carries content, ``interactions``)
    in one transaction. Returns ``status`` ``stored`` (new interaction), ``duplicate`` or
    ``skipped``/``pong``; the caller publishes a ``stored`` one.

    Raises:
        MalformedInputError: the payload is not a usable delivery of its event.
    """
    with db.session() as session:
        # Serialise requests carrying the same delivery id (GitHub redelivers, proxies retry):
        # the second waits for the first's commit and then finds its row.
        session.execute(
            text("SELECT pg_advisory_xact_lock(:ns, hashtext(:delivery))"),
            {"ns": DELIVERY_LOCK_NAMESPACE, "delivery": delivery_id},
        )
        seen = session.execute(
            select(WebhookDelivery.interaction_id).where(WebhookDelivery.delivery_id == delivery_id)
        ).first()
        if seen is not None:
            return WebhookOut(delivery=delivery_id, status="duplicate", interaction_id=seen[0])
        try:
            item = normalize_delivery(event, delivery_id, payload)
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            raise MalformedInputError(f"badly typed field in {event} payload: {exc!r}") from exc
        result = store(session, [item])
    if isinstance(item, SkippedDelivery):
        return WebhookOut(
            delivery=delivery_id,
            status="pong" if item.reason == "ping" else "skipped",
            reason=item.reason,
        )
    iid = result.interaction_ids[0]
    if iid not in result.new_ids:
        # Another request with the same delivery id committed first (concurrent redelivery).
        return WebhookOut(delivery=delivery_id, status="duplicate", interaction_id=iid)
    return WebhookOut(delivery=delivery_id, status="stored", interaction_id=iid)


def store_interactions(
    db: Database, principal: Principal, items: list[InteractionIn], keys: list[str | None]
) -> tuple[list[int], frozenset[int]]:
    """Store API interactions of the principal's project in one transaction.

    ``keys[i]`` is item ``i``'s client idempotency key (or ``None``: a content hash); stored as
    ``api:<project id>:<key>`` so projects cannot collide. Returns ``(id per item, new ids)``.

    Raises:
        MalformedInputError: an item the normaliser rejects.
    """
    normalized: list[NormalizedInteraction] = []
    for item, key in zip(items, keys, strict=True):
        obj: dict[str, Any] = {
            "project": principal.project_name,
            "content": item.content,
            "kind": item.kind,
            "source": "api",
            "author": item.author,
            "external_id": item.external_id,
            "occurred_at": item.occurred_at.isoformat() if item.occurred_at else None,
            "metadata": item.metadata,
        }
        if key is not None:
            obj["idempotency_key"] = f"api:{principal.project_id}:{key}"
        normalized.append(normalize_interaction(obj))
    with db.session() as session:
        result = store(session, normalized)
    return [result.by_key[n.idempotency_key] for n in normalized], result.new_ids


# --- the app ----------------------------------------------------------------------------------


async def _read_body(request: Request, limit: int) -> bytes:
    """The raw body, refusing (413) one over ``limit`` bytes by its Content-Length and by what
    actually arrives (a sender may lie or stream without a length)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "bad Content-Length") from exc
        if size > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {limit} bytes")
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE, f"body over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _payload_bytes(body: bytes, content_type: str) -> bytes:
    """The JSON document of a delivery: the body, or its ``payload`` form field when GitHub is
    set to ``application/x-www-form-urlencoded``."""
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        fields = urllib.parse.parse_qs(body.decode("utf-8", errors="strict"))
        values = fields.get("payload")
        if not values:
            raise ValueError("form body has no payload field")
        return values[0].encode()
    return body


def _validation_error(
    exc: ValidationError, prefix: tuple[str | int, ...]
) -> RequestValidationError:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return RequestValidationError([{**e, "loc": (*prefix, *e["loc"])} for e in errors])


def create_app(
    settings: Settings, db: Database | None = None, dispatcher: Dispatcher | None = None
) -> FastAPI:
    """Build the API for ``settings``.

    Args:
        db: the database to use; default: connect (and migrate) at start-up from ``settings``,
            disposed at shutdown.
        dispatcher: publishes extract tasks; default: a Celery dispatcher on ``settings``'
            broker without publish retries. Without ``REDIS_URL`` (an eager app) nothing is
            published: interactions stay ``received`` until a worker setup or the sweeper
            picks them up, so no model work ever runs in a request.
    """
    state: dict[str, Any] = {"db": db, "dispatcher": dispatcher}

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        owned = state["db"] is None
        if owned:
            state["db"] = await run_in_threadpool(Database.connect, settings)
        if state["dispatcher"] is None and settings.redis_url:
            from pipeline.dispatch import CeleryDispatcher
            from workers.app import make_celery

            state["dispatcher"] = CeleryDispatcher(make_celery(settings), retry=False)
        if state["dispatcher"] is not None and state["dispatcher"].eager:
            log.warning("api_no_broker", detail="eager dispatcher: interactions are only stored")
            state["dispatcher"] = None
        try:
            yield
        finally:
            if owned and state["db"] is not None:
                state["db"].dispose()

    app = FastAPI(
        title="pattern-pipeline",
        version="0.1.0",
        summary="Developer activity in, patterns out.",
        lifespan=lifespan,
    )

    def get_db() -> Database:
        database: Database | None = state["db"]
        if database is None:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "database not ready")
        return database

    async def call(fn: Callable[..., T], *args: Any) -> T:
        try:
            return await run_in_threadpool(fn, *args)
        except SQLOperationalError as exc:
            log.error("database_unavailable", error=str(exc.orig))
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, "database unavailable"
            ) from exc

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, str]:
        """Liveness and database reachability: ``{"status": "ok", "database": "ok"}``, 503
        when the database does not answer."""
        database = get_db()

        def ping() -> None:
            with database.session() as session:
                session.execute(text("SELECT 1"))

        await call(ping)
        return {"status": "ok", "database": "ok"}

    @app.get(
        "/readyz",
        tags=["ops"],
        responses={503: {"description": "the database or the broker does not answer"}},
    )
    async def readyz() -> JSONResponse:
        """Readiness: ``{"database": "ok", "broker": "ok"}`` when the database answers
        ``SELECT 1`` and Redis answers ``PING`` (``"not configured"`` without ``REDIS_URL``,
        which is ready too: eager mode); 503 with the failing part's error otherwise."""

        def check() -> dict[str, str]:
            parts = {"database": "ok", "broker": "not configured"}
            database: Database | None = state["db"]
            if database is None:
                parts["database"] = "not ready"
            else:
                try:
                    with database.session() as session:
                        session.execute(text("SELECT 1"))
                except SQLAlchemyError as exc:
                    parts["database"] = f"unavailable: {type(exc).__name__}"
            if settings.redis_url:
                import redis

                client = redis.Redis.from_url(
                    settings.redis_url, socket_connect_timeout=2, socket_timeout=2
                )
                try:
                    client.ping()
                    parts["broker"] = "ok"
                except redis.RedisError as exc:
                    parts["broker"] = f"unavailable: {type(exc).__name__}"
                finally:
                    client.close()
            return parts

        parts = await run_in_threadpool(check)
        ready = all(v in ("ok", "not configured") for v in parts.values())
        if not ready:
            log.warning("not_ready", **parts)
        code = status.HTTP_200_OK if ready else status.HTTP_503_SERVICE_UNAVAILABLE
        return JSONResponse(parts, status_code=code)

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse)
    async def metrics() -> Response:
        """Prometheus metrics in the text exposition format (:mod:`pipeline.metrics`): queue
        lengths, interactions by status, failures, LLM calls, tokens and cost, today's budget."""
        if state.get("metrics") is None:
            registry = CollectorRegistry(auto_describe=False)
            registry.register(PipelineCollector(get_db(), settings, settings.redis_url))
            state["metrics"] = registry
        body = await run_in_threadpool(generate_latest, state["metrics"])
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def reject(code: int, reason: str, **fields: Any) -> HTTPException:
        log.warning("webhook_rejected", status=code, reason=reason, **fields)
        return HTTPException(code, reason)

    @app.post(
        "/webhooks/github",
        tags=["producers"],
        response_model=WebhookOut,
        status_code=status.HTTP_202_ACCEPTED,
        responses={
            200: {"model": WebhookOut, "description": "ping, skipped or duplicate delivery"},
            400: {"description": "malformed JSON or missing GitHub headers"},
            401: {"description": "missing or wrong X-Hub-Signature-256"},
            413: {"description": "body too large"},
            422: {"description": "not a usable delivery of its event"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    async def github_webhook(
        request: Request,
        response: Response,
        x_github_event: Annotated[str | None, Header()] = None,
        x_github_delivery: Annotated[str | None, Header()] = None,
    ) -> WebhookOut:
        """Receive a GitHub webhook delivery (``pull_request``, ``issues``, ``issue_comment``;
        ``ping`` and other events are acknowledged with no work)."""
        body = await _read_body(request, settings.max_request_bytes)
        secret = settings.github_webhook_secret
        if secret is None:
            log.error("webhook_secret_unset")
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, "GITHUB_WEBHOOK_SECRET is not configured"
            )
        delivery = x_github_delivery or ""
        signature = request.headers.get(SIGNATURE_HEADER)
        secrets = [secret, settings.github_webhook_secret_previous]
        if not any(verify_signature(s.get_secret_value(), body, signature) for s in secrets if s):
            raise reject(
                status.HTTP_401_UNAUTHORIZED, "bad or missing signature", delivery_id=delivery
            )
        if not x_github_event or not delivery:
            raise reject(
                status.HTTP_400_BAD_REQUEST,
                "missing X-GitHub-Event or X-GitHub-Delivery",
                delivery_id=delivery,
            )
        if len(delivery) > 200:
            raise reject(status.HTTP_400_BAD_REQUEST, "X-GitHub-Delivery too long")
        try:
            payload = json.loads(_payload_bytes(body, request.headers.get("content-type", "")))
        except (ValueError, UnicodeDecodeError) as exc:
            raise reject(
                status.HTTP_400_BAD_REQUEST, f"malformed JSON: {exc}", delivery_id=delivery
            ) from exc
        database = get_db()
        started = time.perf_counter()
        try:
            out = await call(store_delivery, database, x_github_event, delivery, payload)
        except MalformedInputError as exc:
            raise reject(
                status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc), delivery_id=delivery,
                github_event=x_github_event,
            ) from exc  # fmt: skip
        if out.status == "stored" and out.interaction_id is not None:
            if await call(_publish, database, state["dispatcher"], [out.interaction_id], settings):
                out.status = "queued"
        else:
            response.status_code = status.HTTP_200_OK
        repo = payload.get("repository") if isinstance(payload, dict) else None
        log.info(
            "webhook",
            delivery_id=delivery,
            project=repo.get("full_name") if isinstance(repo, dict) else None,
            github_event=x_github_event,
            outcome=out.status,
            interaction=out.interaction_id,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return out

    bearer = HTTPBearer(auto_error=False, description="A project API key (`patterns apikey`).")

    async def principal(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    ) -> Principal:
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "missing API key",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        database = get_db()

        def lookup() -> Principal | None:
            with database.session() as session:
                return authenticate(session, credentials.credentials)

        found = await call(lookup)
        if found is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "unknown or revoked API key",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        return found

    @app.post(
        "/v1/interactions",
        tags=["producers"],
        response_model=InteractionOut | BulkOut,
        status_code=status.HTTP_202_ACCEPTED,
        responses={
            200: {"description": "every interaction was already stored (idempotent replay)"},
            400: {"description": "malformed JSON"},
            401: {"description": "missing or unknown API key"},
            403: {"description": "an item names another project than the key's"},
            413: {"description": "body too large"},
            422: {"description": "validation error; `detail[].loc` names the field"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "oneOf": [
                                {"$ref": "#/components/schemas/InteractionIn"},
                                {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/InteractionIn"},
                                    "maxItems": MAX_BULK_ITEMS,
                                },
                            ]
                        }
                    }
                },
            }
        },
    )
    async def submit_interactions(
        request: Request,
        response: Response,
        who: Annotated[Principal, Depends(principal)],
        idempotency_key: Annotated[
            str | None, Header(min_length=1, max_length=MAX_IDEMPOTENCY_KEY - 10)
        ] = None,
    ) -> InteractionOut | BulkOut:
        """Submit one interaction (a JSON object) or many (a JSON array of up to 1000).

        A single request is idempotent on its ``Idempotency-Key`` header; bulk items on their
        ``idempotency_key`` field, else ``<Idempotency-Key>#<index>`` when the header is given.
        """
        body = await _read_body(request, settings.max_request_bytes)
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, f"malformed JSON: {exc}") from exc
        bulk = isinstance(data, list)
        try:
            if bulk:
                if len(data) > MAX_BULK_ITEMS:
                    raise RequestValidationError(
                        [{"type": "too_long", "loc": ("body",),
                          "msg": f"at most {MAX_BULK_ITEMS} items per request"}]
                    )  # fmt: skip
                items = _ITEMS.validate_python(data)
            else:
                items = [InteractionIn.model_validate(data)]
        except ValidationError as exc:
            raise _validation_error(exc, ("body",)) from exc
        for index, item in enumerate(items):
            if item.project is not None and item.project != who.project_name:
                where = f"item {index}: " if bulk else ""
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN,
                    f"{where}project {item.project!r} is not this key's project",
                )
        if bulk:
            keys = [
                it.idempotency_key
                or (f"{idempotency_key}#{i}" if idempotency_key is not None else None)
                for i, it in enumerate(items)
            ]
        else:
            keys = [idempotency_key or items[0].idempotency_key]
        database = get_db()
        ids, new = await call(store_interactions, database, who, items, keys)
        fresh = [i for i in dict.fromkeys(ids) if i in new]
        published = await call(_publish, database, state["dispatcher"], fresh, settings)
        state_of_new = "queued" if published else "received"
        out = [
            InteractionOut(id=i, created=i in new, status=state_of_new if i in new else "existing")
            for i in ids
        ]
        if not fresh:
            response.status_code = status.HTTP_200_OK
        log.info("interactions", project=who.project_name, items=len(ids), created=len(fresh))
        if not bulk:
            return out[0]
        return BulkOut(created=len(fresh), existing=len(ids) - len(fresh), items=out)

    @app.post(
        "/v1/typescript-errors/{error_id}/{verdict}",
        tags=["errorfix"],
        response_model=ReviewOut,
        responses={
            401: {"description": "missing or unknown API key"},
            403: {"description": "the error belongs to another project"},
            404: {"description": "no such error"},
            409: {"description": "the error has no suggested fix to review yet"},
        },
    )
    async def review_fix(
        error_id: int,
        verdict: Literal["accept", "reject"],
        who: Annotated[Principal, Depends(principal)],
    ) -> ReviewOut:
        """Accept or reject the latest suggested fix of a TypeScript error. Accepted fixes become
        retrieval examples for later batches (``patterns errors accept|reject`` does the same)."""
        database = get_db()

        def do() -> str:
            with database.session() as session:
                owner = session.scalar(
                    select(TypeScriptError.project_id).where(TypeScriptError.id == error_id)
                )
            if owner is None:
                return "missing"
            if owner != who.project_id:
                return "forbidden"
            try:
                review(database, error_id, verdict == "accept")
            except MalformedInputError:
                return "no_suggestion"
            return "ok"

        outcome = await call(do)
        if outcome == "missing":
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no typescript error {error_id}")
        if outcome == "forbidden":
            raise HTTPException(status.HTTP_403_FORBIDDEN, "error of another project")
        if outcome == "no_suggestion":
            raise HTTPException(status.HTTP_409_CONFLICT, "no suggested fix to review yet")
        return ReviewOut(id=error_id, status="accepted" if verdict == "accept" else "rejected")

    admin_bearer = HTTPBearer(
        auto_error=False, description="settings.admin_token (PATTERNS_ADMIN_TOKEN)."
    )

    @app.get(
        "/v1/costs",
        tags=["ops"],
        response_model=CostReport,
        responses={
            401: {"description": "admin token configured and missing or wrong"},
            422: {"description": "day is not a YYYY-MM-DD date"},
        },
    )
    async def costs(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(admin_bearer)],
        day: dt.date | None = None,
    ) -> CostReport:
        """The UTC day's Claude budget and model spend (default: today). When an admin token
        is configured it must be sent as ``Authorization: Bearer <token>``."""
        token = settings.admin_token
        if token is not None and (
            credentials is None
            or not hmac.compare_digest(
                credentials.credentials.encode(), token.get_secret_value().encode()
            )
        ):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "missing or wrong admin token",
                headers={"WWW-Authenticate": "Bearer"},
            )  # fmt: skip
        database = get_db()

        def report() -> CostReport:
            with database.session() as session:
                return cost_report(session, settings=settings, day=day)

        return await call(report)

    return app
