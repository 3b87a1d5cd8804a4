"""``POST /v1/interactions``: a project submits one interaction or many, with its API key.

A single request is idempotent on its ``Idempotency-Key`` header (bulk items on
``idempotency_key``, else ``<header>#<index>``, else a content hash): 202 when something was
created, 200 for a replay. Validation errors are 422 with ``detail[].loc`` naming the field
(non-finite numbers and integers outside 64 bits included); 400 for malformed JSON or nesting
deeper than 64 levels; 401 for a missing, unknown or revoked key; 403 for an item naming another
project. Text is stored with U+0000 and lone surrogates replaced by U+FFFD
(:mod:`pipeline.intake.jsonsafe`).
"""

from __future__ import annotations

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, HTTPException, Request, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from pipeline.api.deps import DB, Caller, State, call
from pipeline.api.schemas import (
    ITEMS,
    MAX_BULK_ITEMS,
    MAX_IDEMPOTENCY_KEY,
    BulkOut,
    InteractionIn,
    InteractionOut,
)
from pipeline.api.webhooks import read_body
from pipeline.intake.deliveries import store_interactions
from pipeline.intake.jsonsafe import JsonTooDeepError, UnsafeJsonError, load_json
from pipeline.intake.outbox import publish_new

log = structlog.get_logger(__name__)

router = APIRouter(tags=["producers"])


def _validation_error(
    exc: ValidationError, prefix: tuple[str | int, ...]
) -> RequestValidationError:
    errors = exc.errors(include_url=False, include_context=False, include_input=False)
    return RequestValidationError([{**e, "loc": (*prefix, *e["loc"])} for e in errors])


def _parse(body: bytes) -> tuple[list[InteractionIn], bool]:
    """The submitted items and whether the body was a bulk array, text made storable
    (:func:`pipeline.intake.jsonsafe.load_json`).

    Raises:
        HTTPException: 400 malformed JSON, or nested deeper than 64 levels.
        RequestValidationError: an item that does not validate, or an unusable number (422, the
            field named).
    """
    try:
        data = load_json(body)
    except UnsafeJsonError as exc:
        raise RequestValidationError(
            [{"type": "value_error", "loc": ("body", *exc.loc), "msg": exc.msg}]
        ) from exc
    except ValueError as exc:  # UnicodeDecodeError and JsonTooDeepError are ValueErrors
        detail = str(exc) if isinstance(exc, JsonTooDeepError) else f"malformed JSON: {exc}"
        raise HTTPException(status.HTTP_400_BAD_REQUEST, detail) from exc
    bulk = isinstance(data, list)
    try:
        if bulk:
            if len(data) > MAX_BULK_ITEMS:
                raise RequestValidationError(
                    [{"type": "too_long", "loc": ("body",),
                      "msg": f"at most {MAX_BULK_ITEMS} items per request"}]
                )  # fmt: skip
            return ITEMS.validate_python(data), True
        return [InteractionIn.model_validate(data)], False
    except ValidationError as exc:
        raise _validation_error(exc, ("body",)) from exc


def _keys(items: list[InteractionIn], bulk: bool, header: str | None) -> list[str | None]:
    """Each item's client idempotency key (``None``: a content hash)."""
    if not bulk:
        return [header or items[0].idempotency_key]
    return [
        it.idempotency_key or (f"{header}#{i}" if header is not None else None)
        for i, it in enumerate(items)
    ]


@router.post(
    "/v1/interactions",
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
    state: State,
    db: DB,
    who: Caller,
    idempotency_key: Annotated[
        str | None, Header(min_length=1, max_length=MAX_IDEMPOTENCY_KEY - 10)
    ] = None,
) -> InteractionOut | BulkOut:
    """Submit one interaction (a JSON object) or many (a JSON array of up to 1000).

    A single request is idempotent on its ``Idempotency-Key`` header; bulk items on their
    ``idempotency_key`` field, else ``<Idempotency-Key>#<index>`` when the header is given.
    """
    items, bulk = _parse(await read_body(request, state.settings.max_request_bytes))
    for index, item in enumerate(items):
        if item.project is not None and item.project != who.project_name:
            where = f"item {index}: " if bulk else ""
            raise HTTPException(
                status.HTTP_403_FORBIDDEN,
                f"{where}project {item.project!r} is not this key's project",
            )
    fields: list[dict[str, Any]] = [item.stored_fields() for item in items]
    stored = await call(
        store_interactions, db, project_id=who.project_id, project_name=who.project_name,
        items=fields, keys=_keys(items, bulk, idempotency_key),
    )  # fmt: skip
    fresh = [i for i in dict.fromkeys(stored.ids) if i in stored.new_ids]
    batch = state.settings.extract_batch_size
    published = await call(publish_new, db, state.dispatcher, fresh, batch)
    state_of_new = "queued" if published else "received"
    out = [
        InteractionOut(
            id=i, created=i in stored.new_ids,
            status=state_of_new if i in stored.new_ids else "existing",
        )
        for i in stored.ids
    ]  # fmt: skip
    if not fresh:
        response.status_code = status.HTTP_200_OK
    log.info("interactions", project=who.project_name, items=len(stored.ids), created=len(fresh))
    if not bulk:
        return out[0]
    return BulkOut(created=len(fresh), existing=len(stored.ids) - len(fresh), items=out)
