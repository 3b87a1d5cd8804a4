"""Message Batches submitted once: the ``claude_message_batches`` ledger.

A Claude task that outlives the broker's visibility timeout is delivered again while (or after)
its first run polls the batch it submitted. Each round of
:class:`~pipeline.llm.claude_batch.ClaudeBatchEngine` is keyed on :func:`request_key` (the model
and the round's ``(custom_id, params)`` pairs, which are deterministic for the same work) and
claimed here *before* submission (:func:`claim`); the batch id is recorded right after
(:func:`record_submitted`). A second run of the same work finds the row (:func:`find`) and
resumes polling that batch, adopting its reservations, instead of submitting and paying again.

A claim without a batch id whose lease lapsed belongs to a run that died before submitting (or
in the instant between Anthropic's answer and the record, the one window left): it may be taken
over. Rows older than ``claude_batch_deadline_s`` are ignored (that batch was canceled or has
expired), so the same work submitted much later is a new batch.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.spend.reservations import Reservation
from pipeline.types import Priority


@dataclass(frozen=True)
class Recorded:
    """A ledger row: ``batch_id`` (``None`` while its submitter holds the claim), the
    reservations by ``custom_id``, and whether the submitter's lease is still live."""

    batch_id: str | None
    reservations: dict[str, uuid.UUID]
    lease_live: bool


def request_key(model: str, requests: Iterable[tuple[str, Mapping[str, Any]]]) -> str:
    """SHA-256 (64 hex digits) of the model and the ``(custom_id, params)`` pairs, in any
    order (they are sorted by ``custom_id``)."""
    body = {"model": model, "requests": sorted([cid, params] for cid, params in requests)}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def find(db: Database, key: str, *, max_age_s: float) -> Recorded | None:
    """The ledger row of ``key`` created less than ``max_age_s`` seconds ago, or ``None``."""
    with db.session(ALL_PROJECTS) as session:
        row = session.execute(
            text(
                "SELECT batch_id, reservations, lease_expires_at > now() AS live "
                "FROM claude_message_batches WHERE request_key = :k "
                "AND created_at > now() - make_interval(secs => :age)"
            ),
            {"k": key, "age": max_age_s},
        ).first()
    if row is None:
        return None
    held = {cid: uuid.UUID(str(rid)) for cid, rid in row.reservations.items()}
    return Recorded(row.batch_id, held, bool(row.live))


def claim(
    db: Database, key: str, reservations: Mapping[str, uuid.UUID], *, lease_s: float,
    max_age_s: float,
) -> bool:  # fmt: skip
    """Claim ``key`` before submitting its batch, recording ``custom_id → reservation id``: one
    ``INSERT ... ON CONFLICT DO UPDATE`` that takes over only a row with no batch id whose
    lease lapsed, or one older than ``max_age_s`` seconds.

    Returns:
        Whether this caller holds the claim (``False``: another run holds or submitted it).
    """
    with db.session(ALL_PROJECTS) as session:
        row = session.execute(
            text(
                "INSERT INTO claude_message_batches AS b "
                "(request_key, batch_id, reservations, lease_expires_at) "
                "VALUES (:k, NULL, CAST(:r AS jsonb), now() + make_interval(secs => :lease)) "
                "ON CONFLICT (request_key) DO UPDATE SET batch_id = NULL, "
                "reservations = EXCLUDED.reservations, "
                "lease_expires_at = EXCLUDED.lease_expires_at, created_at = now() "
                "WHERE (b.batch_id IS NULL AND b.lease_expires_at < now()) "
                "OR b.created_at < now() - make_interval(secs => :age) "
                "RETURNING request_key"
            ),
            {"k": key, "r": json.dumps({c: str(r) for c, r in reservations.items()}),
             "lease": lease_s, "age": max_age_s},
        ).first()  # fmt: skip
    return row is not None


def record_submitted(db: Database, key: str, batch_id: str) -> None:
    """Record the id Anthropic gave the batch of ``key`` (just after submission)."""
    with db.session(ALL_PROJECTS) as session:
        session.execute(
            text("UPDATE claude_message_batches SET batch_id = :b WHERE request_key = :k"),
            {"b": batch_id, "k": key},
        )


def forget(db: Database, key: str) -> None:
    """Drop the claim of ``key`` (its submission failed; the same work may be submitted)."""
    with db.session(ALL_PROJECTS) as session:
        session.execute(
            text("DELETE FROM claude_message_batches WHERE request_key = :k AND batch_id IS NULL"),
            {"k": key},
        )


def renew(db: Database, key: str, lease_s: float) -> None:
    """Extend the lease of ``key``'s row to ``lease_s`` seconds from now (on each poll)."""
    with db.session(ALL_PROJECTS) as session:
        session.execute(
            text(
                "UPDATE claude_message_batches "
                "SET lease_expires_at = now() + make_interval(secs => :lease) "
                "WHERE request_key = :k"
            ),
            {"lease": lease_s, "k": key},
        )


def reservations_of(db: Database, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, Reservation]:
    """The budget reservations with these ids (any status), by id, to adopt on resume."""
    with db.session(ALL_PROJECTS) as session:
        rows = session.execute(
            text(
                "SELECT id, day, provider, model, amount_usd, priority "
                "FROM budget_reservations WHERE id = ANY(:ids)"
            ),
            {"ids": list(ids)},
        ).all()
    return {
        r.id: Reservation(r.id, r.day, r.provider, r.model, r.amount_usd, Priority(r.priority))
        for r in rows
    }
