"""Storing what the HTTP producers receive: one GitHub delivery, or a project's submitted
interactions, each in one transaction (``received``), before anything is published.

Publishing follows the commit (:func:`pipeline.intake.outbox.publish_new`); a request never runs
model work.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import select, text

from pipeline.db.engine import ALL_PROJECTS, Database, ProjectScope
from pipeline.db.models import WebhookDelivery
from pipeline.errors import MalformedInputError
from pipeline.intake.normalize import (
    NormalizedInteraction,
    SkippedDelivery,
    normalize_delivery,
    normalize_interaction,
)
from pipeline.intake.store import store

#: First key of the two-key advisory lock taken per delivery id ("hook").
DELIVERY_LOCK_NAMESPACE = 0x686F6F6B


class DeliveryStatus(StrEnum):
    """What became of a delivery: ``stored`` (new interaction, to publish), then ``queued`` once
    published; ``duplicate`` (its delivery id was seen); ``skipped`` (nothing to learn) or
    ``pong`` (a ``ping``)."""

    QUEUED = "queued"
    STORED = "stored"
    DUPLICATE = "duplicate"
    SKIPPED = "skipped"
    PONG = "pong"


@dataclass(frozen=True)
class DeliveryResult:
    """The outcome of :func:`store_delivery`; ``reason`` says why a delivery was skipped."""

    status: DeliveryStatus
    interaction_id: int | None = None
    reason: str | None = None


def store_delivery(db: Database, event: str, delivery_id: str, payload: Any) -> DeliveryResult:
    """Store one delivery (``webhook_deliveries`` and, when it carries content, ``interactions``)
    in one transaction. Spans projects explicitly: the (signed) payload names the repository,
    whose project is created when new.

    Requests carrying the same delivery id (GitHub redelivers, proxies retry) are serialised by
    an advisory lock on the id: the second waits for the first's commit and then finds its row.

    Raises:
        MalformedInputError: the payload is not a usable delivery of its event.
        DatabaseUnavailableError: Postgres is down.
    """
    with db.session(ALL_PROJECTS) as session:
        session.execute(
            text("SELECT pg_advisory_xact_lock(:ns, hashtext(:delivery))"),
            {"ns": DELIVERY_LOCK_NAMESPACE, "delivery": delivery_id},
        )
        seen = session.execute(
            select(WebhookDelivery.interaction_id).where(WebhookDelivery.delivery_id == delivery_id)
        ).first()
        if seen is not None:
            return DeliveryResult(DeliveryStatus.DUPLICATE, interaction_id=seen[0])
        try:
            item = normalize_delivery(event, delivery_id, payload)
        except (AttributeError, TypeError, ValueError, KeyError) as exc:
            raise MalformedInputError(f"badly typed field in {event} payload: {exc!r}") from exc
        result = store(session, [item])
    if isinstance(item, SkippedDelivery):
        status = DeliveryStatus.PONG if item.reason == "ping" else DeliveryStatus.SKIPPED
        return DeliveryResult(status, reason=item.reason)
    iid = result.interaction_ids[0]
    if iid not in result.new_ids:
        # Another request with the same delivery id committed first (concurrent redelivery).
        return DeliveryResult(DeliveryStatus.DUPLICATE, interaction_id=iid)
    return DeliveryResult(DeliveryStatus.STORED, interaction_id=iid)


@dataclass(frozen=True)
class StoredInteractions:
    """What :func:`store_interactions` did: the interaction id of each item, in order, and
    which of them this call created."""

    ids: list[int]
    new_ids: frozenset[int]


def store_interactions(
    db: Database,
    *,
    project_id: uuid.UUID,
    project_name: str,
    items: Sequence[Mapping[str, Any]],
    keys: Sequence[str | None],
) -> StoredInteractions:
    """Store a project's submitted interactions in one transaction, under that project's
    row-level security.

    Args:
        items: ``{"content", "kind", "author", "external_id", "occurred_at", "metadata"}`` each
            (validated by the API); the project is the caller's, whatever the item says.
        keys: item ``i``'s client idempotency key, or ``None`` (a content hash is used). Stored
            as ``api:<project id>:<key>`` so that projects cannot collide.

    Raises:
        MalformedInputError: an item the normaliser rejects.
        DatabaseUnavailableError: Postgres is down.
    """
    normalized: list[NormalizedInteraction] = []
    for item, key in zip(items, keys, strict=True):
        obj: dict[str, Any] = {**item, "project": project_name, "source": "api"}
        obj.pop("idempotency_key", None)
        if key is not None:
            obj["idempotency_key"] = f"api:{project_id}:{key}"
        normalized.append(normalize_interaction(obj))
    with db.session(ProjectScope(project_id)) as session:
        result = store(session, normalized)
    return StoredInteractions(
        [result.by_key[n.idempotency_key] for n in normalized], result.new_ids
    )
