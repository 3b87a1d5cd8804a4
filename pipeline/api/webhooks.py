"""``POST /webhooks/github``: signed GitHub deliveries are checked, stored and queued.

Status codes: 202 stored and enqueued (or stored, when publishing failed or no broker is
configured); 200 ``ping``, an event or action with nothing to learn from, or a repeated
``X-GitHub-Delivery``; 400 malformed JSON, JSON nested deeper than 64 levels, or missing or
malformed GitHub headers (``X-GitHub-Delivery``: ``[A-Za-z0-9-]``, at most 100 characters, as it
is written into feedback comments); 401 missing or wrong ``X-Hub-Signature-256``; 413 body over
``max_request_bytes``; 422 well-formed JSON that is not a usable delivery of its event, or that
holds a non-finite number or an integer outside 64 bits (the field named); 503 no webhook secret
configured, the database is down, or ``webhook_max_concurrency`` bodies are already being read
and verified (with ``Retry-After``; GitHub records a failed delivery, which can be redelivered).

Text is stored with U+0000 and lone surrogates replaced by U+FFFD, so that a real delivery with a
NUL in a body is still stored and extracted (:mod:`pipeline.intake.jsonsafe`).
"""

from __future__ import annotations

import re
import time
import urllib.parse
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, HTTPException, Request, Response, status

from pipeline.api.deps import DB, State, call
from pipeline.api.schemas import WebhookOut
from pipeline.errors import MalformedInputError
from pipeline.intake.deliveries import DeliveryStatus, store_delivery
from pipeline.intake.jsonsafe import JsonTooDeepError, UnsafeJsonError, load_json
from pipeline.intake.outbox import publish_new
from pipeline.intake.signatures import SIGNATURE_HEADER, verify_signature

log = structlog.get_logger(__name__)

router = APIRouter(tags=["producers"])

#: ``X-GitHub-Delivery``: GitHub sends a UUID; the id is a key, a log field and part of an HTML
#: comment in feedback (``<!-- ... delivery=<id> -->``), so nothing else is accepted.
DELIVERY_ID = re.compile(r"[A-Za-z0-9-]{1,100}")
#: ``X-GitHub-Event``: GitHub's event names (``pull_request``, ``issue_comment``...).
EVENT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: Seconds a client is asked to wait when every webhook slot is taken.
BUSY_RETRY_AFTER_S = 5


async def read_body(request: Request, limit: int) -> bytes:
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


def payload_bytes(body: bytes, content_type: str) -> bytes:
    """The JSON document of a delivery: the body, or its ``payload`` form field when GitHub is
    set to ``application/x-www-form-urlencoded``.

    Raises:
        ValueError: a form body without a ``payload`` field.
        UnicodeDecodeError: a form body that is not UTF-8.
    """
    if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        fields = urllib.parse.parse_qs(body.decode("utf-8", errors="strict"))
        values = fields.get("payload")
        if not values:
            raise ValueError("form body has no payload field")
        return values[0].encode()
    return body


def _reject(code: int, reason: str, **fields: Any) -> HTTPException:
    log.warning("webhook_rejected", status=code, reason=reason, **fields)
    return HTTPException(code, reason)


def _authentic(state: State, body: bytes, signature: str | None) -> bool:
    settings = state.settings
    secrets = [settings.github_webhook_secret, settings.github_webhook_secret_previous]
    return any(verify_signature(s.get_secret_value(), body, signature) for s in secrets if s)


def _checked_event(
    state: State, request: Request, body: bytes, event: str | None, delivery: str
) -> str:
    """The delivery's event, once the secret is configured (else 503), the signature is right
    (else 401) and the GitHub headers are there and sane (else 400)."""
    if state.settings.github_webhook_secret is None:
        log.error("webhook_secret_unset")
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, "GITHUB_WEBHOOK_SECRET is not configured"
        )
    if not _authentic(state, body, request.headers.get(SIGNATURE_HEADER)):
        raise _reject(
            status.HTTP_401_UNAUTHORIZED, "bad or missing signature", delivery_id=delivery
        )
    if not event or not delivery:
        raise _reject(
            status.HTTP_400_BAD_REQUEST, "missing X-GitHub-Event or X-GitHub-Delivery",
            delivery_id=delivery,
        )  # fmt: skip
    if DELIVERY_ID.fullmatch(delivery) is None:
        raise _reject(
            status.HTTP_400_BAD_REQUEST,
            "X-GitHub-Delivery must be 1-100 characters of A-Z, a-z, 0-9 and '-'",
        )
    if EVENT_NAME.fullmatch(event) is None:
        raise _reject(
            status.HTTP_400_BAD_REQUEST,
            "X-GitHub-Event must be 1-64 characters of A-Z, a-z, 0-9, '_', '.' and '-'",
            delivery_id=delivery,
        )  # fmt: skip
    return event


async def _authentic_body(
    state: State, request: Request, event: str | None, delivery: str
) -> tuple[bytes, str]:
    """The body and event of an authentic delivery (:func:`read_body`, :func:`_checked_event`),
    holding one of ``webhook_max_concurrency`` slots while the (unauthenticated) body is read
    and its signature checked, so that senders without the secret cannot make the server hold
    more than that many bodies.

    Raises:
        HTTPException: 503 with ``Retry-After`` when every slot is taken; else as
            :func:`read_body` and :func:`_checked_event`.
    """
    gate = state.webhook_gate
    if not gate.enter():
        log.warning("webhook_busy", limit=gate.limit, delivery_id=delivery[:100])
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            f"{gate.limit} webhook deliveries are being received; retry later",
            headers={"Retry-After": str(BUSY_RETRY_AFTER_S)},
        )
    try:
        body = await read_body(request, state.settings.max_request_bytes)
        return body, _checked_event(state, request, body, event, delivery)
    finally:
        gate.leave()


@router.post(
    "/webhooks/github",
    response_model=WebhookOut,
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        200: {"model": WebhookOut, "description": "ping, skipped or duplicate delivery"},
        400: {"description": "malformed or too deeply nested JSON, or bad GitHub headers"},
        401: {"description": "missing or wrong X-Hub-Signature-256"},
        413: {"description": "body too large"},
        422: {"description": "not a usable delivery of its event, or an unusable number"},
        503: {
            "description": "no secret configured, database down, or too many deliveries "
            "being received at once (Retry-After)"
        },
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
    state: State,
    db: DB,
    x_github_event: Annotated[str | None, Header()] = None,
    x_github_delivery: Annotated[str | None, Header()] = None,
) -> WebhookOut:
    """Receive a GitHub webhook delivery (``pull_request``, ``issues``, ``issue_comment``;
    ``ping`` and other events are acknowledged with no work)."""
    settings = state.settings
    delivery = x_github_delivery or ""
    body, event = await _authentic_body(state, request, x_github_event, delivery)
    try:
        payload = load_json(payload_bytes(body, request.headers.get("content-type", "")))
    except UnsafeJsonError as exc:
        raise _reject(
            status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc), delivery_id=delivery
        ) from exc
    except ValueError as exc:  # UnicodeDecodeError and JsonTooDeepError are ValueErrors
        detail = str(exc) if isinstance(exc, JsonTooDeepError) else f"malformed JSON: {exc}"
        raise _reject(status.HTTP_400_BAD_REQUEST, detail, delivery_id=delivery) from exc
    started = time.perf_counter()
    try:
        stored = await call(store_delivery, db, event, delivery, payload)
    except MalformedInputError as exc:
        raise _reject(
            status.HTTP_422_UNPROCESSABLE_CONTENT, str(exc), delivery_id=delivery,
            github_event=event,
        ) from exc  # fmt: skip
    out = WebhookOut(
        delivery=delivery,
        status=stored.status,
        interaction_id=stored.interaction_id,
        reason=stored.reason,
    )
    if stored.status is DeliveryStatus.STORED and stored.interaction_id is not None:
        ids = [stored.interaction_id]
        if await call(publish_new, db, state.dispatcher, ids, settings.extract_batch_size):
            out.status = DeliveryStatus.QUEUED
    else:
        response.status_code = status.HTTP_200_OK
    repo = payload.get("repository") if isinstance(payload, dict) else None
    log.info(
        "webhook",
        delivery_id=delivery,
        project=repo.get("full_name") if isinstance(repo, dict) else None,
        github_event=event,
        outcome=out.status.value,
        interaction=out.interaction_id,
        ms=round((time.perf_counter() - started) * 1000, 1),
    )
    return out
