"""``POST /webhooks/github``: signed GitHub deliveries are checked, stored and queued.

Status codes: 202 stored and enqueued (or stored, when publishing failed or no broker is
configured); 200 ``ping``, an event or action with nothing to learn from, or a repeated
``X-GitHub-Delivery``; 400 malformed JSON or missing GitHub headers; 401 missing or wrong
``X-Hub-Signature-256``; 413 body over ``max_request_bytes``; 422 well-formed JSON that is not a
usable delivery of its event; 503 no webhook secret configured or the database is down.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, HTTPException, Request, Response, status

from pipeline.api.deps import DB, State, call
from pipeline.api.schemas import WebhookOut
from pipeline.errors import MalformedInputError
from pipeline.intake.deliveries import DeliveryStatus, store_delivery
from pipeline.intake.outbox import publish_new
from pipeline.intake.signatures import SIGNATURE_HEADER, verify_signature

log = structlog.get_logger(__name__)

router = APIRouter(tags=["producers"])


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
    if len(delivery) > 200:
        raise _reject(status.HTTP_400_BAD_REQUEST, "X-GitHub-Delivery too long")
    return event


@router.post(
    "/webhooks/github",
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
    state: State,
    db: DB,
    x_github_event: Annotated[str | None, Header()] = None,
    x_github_delivery: Annotated[str | None, Header()] = None,
) -> WebhookOut:
    """Receive a GitHub webhook delivery (``pull_request``, ``issues``, ``issue_comment``;
    ``ping`` and other events are acknowledged with no work)."""
    settings = state.settings
    body = await read_body(request, settings.max_request_bytes)
    delivery = x_github_delivery or ""
    event = _checked_event(state, request, body, x_github_event, delivery)
    try:
        payload = json.loads(payload_bytes(body, request.headers.get("content-type", "")))
    except (ValueError, UnicodeDecodeError) as exc:
        raise _reject(
            status.HTTP_400_BAD_REQUEST, f"malformed JSON: {exc}", delivery_id=delivery
        ) from exc
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
