"""Request and response bodies of the HTTP API (pydantic): what the OpenAPI schema shows."""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator

from pipeline.intake.deliveries import DeliveryStatus

#: Most interactions accepted in one bulk request.
MAX_BULK_ITEMS = 1000
#: Longest ``Idempotency-Key`` accepted (the stored key adds ``api:<project uuid>:``).
MAX_IDEMPOTENCY_KEY = 200


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

    def stored_fields(self) -> dict[str, Any]:
        """The fields the store takes (JSON types: ``occurred_at`` as ISO 8601)."""
        return self.model_dump(mode="json", exclude={"project", "idempotency_key"})


ITEMS = TypeAdapter(list[InteractionIn])


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
    status: DeliveryStatus = Field(description="queued | stored | duplicate | skipped | pong")
    interaction_id: int | None = None
    reason: str | None = None
