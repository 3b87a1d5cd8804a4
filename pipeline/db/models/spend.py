"""Tables of model spend: every model request (``llm_calls``), the exact response cache
(``llm_response_cache``), the daily budget and its reservations, submitted Message Batches."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db.models.base import Base, _created, _uuid_pk
from pipeline.db.status import (
    ReservationStatus,
    check_in,
)
from pipeline.types import Priority


class LLMCall(Base):
    """One model request: provider, model, tokens, cost and outcome.

    For a batched vLLM call there is one row per prompt; ``batch_id`` groups them and
    ``latency_ms`` is the wall time of the whole batched call that carried the prompt.
    ``cache_hit``: the request was answered from ``llm_response_cache`` and reached no model
    (``batch_size`` 0, no tokens, no cost, outcome ``ok``): counted as a hit, not as a call.
    """

    __tablename__ = "llm_calls"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    provider: Mapped[str] = mapped_column(Text)  # local | claude | openai_compat
    model: Mapped[str] = mapped_column(Text)
    task_type: Mapped[str] = mapped_column(Text)
    interaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("interactions.id", ondelete="SET NULL")
    )
    batch_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    batch_size: Mapped[int] = mapped_column(Integer, server_default="1")
    attempt: Mapped[int] = mapped_column(SmallInteger, server_default="1")
    tokens_in: Mapped[int] = mapped_column(Integer, server_default="0")
    tokens_out: Mapped[int] = mapped_column(Integer, server_default="0")
    cache_read_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    cache_write_tokens: Mapped[int] = mapped_column(Integer, server_default="0")
    cost_usd: Mapped[Decimal] = mapped_column(Numeric(12, 6), server_default="0")
    latency_ms: Mapped[int] = mapped_column(Integer, server_default="0")
    route_reason: Mapped[str | None] = mapped_column(Text)
    outcome: Mapped[str] = mapped_column(Text)  # CallOutcome
    error: Mapped[str | None] = mapped_column(Text)
    cache_hit: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        Index("ix_llm_calls_created", "created_at"),
        Index("ix_llm_calls_interaction", "interaction_id"),
    )


class ResponseCacheEntry(Base):
    """One accepted model output of the exact response cache (:mod:`pipeline.extract.cache`).

    Keyed on the project, a SHA-256 (hex) of the canonical first-attempt request, the task
    type, the model and the prompt and schema versions; ``output`` is the text that parsed,
    ``tokens_in``/``tokens_out`` the counts of the call that produced it. Project-scoped (row-level
    security): one project's output never serves another.
    """

    __tablename__ = "llm_response_cache"
    project_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    prompt_sha256: Mapped[str] = mapped_column(Text, primary_key=True)
    task_type: Mapped[str] = mapped_column(Text, primary_key=True)
    model: Mapped[str] = mapped_column(Text, primary_key=True)
    prompt_version: Mapped[str] = mapped_column(Text, primary_key=True)
    schema_version: Mapped[str] = mapped_column(Text, primary_key=True)
    output: Mapped[str] = mapped_column(Text)
    tokens_in: Mapped[int] = mapped_column(Integer, server_default="0")
    tokens_out: Mapped[int] = mapped_column(Integer, server_default="0")
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        CheckConstraint("prompt_sha256 ~ '^[0-9a-f]{64}$'", name="llm_response_cache_sha256_check"),
    )


class BudgetDay(Base):
    """The day's dollar budget per provider: reservations are taken before a call, settled after."""

    __tablename__ = "budget_days"
    day: Mapped[dt.date] = mapped_column(Date, primary_key=True)
    provider: Mapped[str] = mapped_column(Text, primary_key=True)
    cap_usd: Mapped[Decimal] = mapped_column(Numeric(12, 6))
    reserved_usd: Mapped[Decimal] = mapped_column(Numeric(12, 6), server_default="0")
    spent_usd: Mapped[Decimal] = mapped_column(Numeric(12, 6), server_default="0")
    updated_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        CheckConstraint("reserved_usd >= 0 AND spent_usd >= 0", name="budget_days_nonnegative"),
    )


class BudgetReservation(Base):
    """Money set aside on a ``budget_days`` row before a call, settled or released after it.

    ``status``: ``reserved`` (call in flight) → ``settled`` (``actual_usd`` is the real cost) or
    ``released`` (the call did not happen or its worker died; ``reason`` says which).
    ``lease_expires_at``: the reservation is a lease, renewed while its call is in flight
    (:mod:`pipeline.spend.leases`); once it lapses the housekeeping sweep releases it.
    """

    __tablename__ = "budget_reservations"
    id: Mapped[uuid.UUID] = _uuid_pk()
    day: Mapped[dt.date] = mapped_column(Date)
    provider: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    task_type: Mapped[str] = mapped_column(Text)
    interaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("interactions.id", ondelete="SET NULL")
    )
    priority: Mapped[str] = mapped_column(Text, server_default=Priority.NORMAL.value)
    amount_usd: Mapped[Decimal] = mapped_column(Numeric(12, 6))
    actual_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    status: Mapped[str] = mapped_column(Text, server_default=ReservationStatus.RESERVED.value)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    lease_expires_at: Mapped[dt.datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("(now() + '00:15:00'::interval)")
    )
    __table_args__ = (
        check_in("priority", Priority, "budget_reservations_priority_check"),
        check_in("status", ReservationStatus, "budget_reservations_status_check"),
        CheckConstraint(
            "amount_usd >= 0 AND (actual_usd IS NULL OR actual_usd >= 0)",
            name="budget_reservations_nonnegative",
        ),
        Index("ix_budget_reservations_status_created", "status", "created_at"),
        Index("ix_budget_reservations_status_lease", "status", "lease_expires_at"),
    )


class ClaudeMessageBatch(Base):
    """A Message Batch submitted to Claude, recorded before submission so a redelivered task
    resumes it instead of submitting it again (:mod:`pipeline.llm.batch_ledger`).

    ``request_key``: SHA-256 (hex) of the model and the batch's ``(custom_id, params)`` pairs;
    ``batch_id``: Anthropic's id once submitted (``NULL`` while the submitter holds the claim);
    ``reservations``: ``custom_id → budget reservation id``; ``lease_expires_at``: when the
    submitter's claim lapses (renewed on each poll).
    """

    __tablename__ = "claude_message_batches"
    request_key: Mapped[str] = mapped_column(Text, primary_key=True)
    batch_id: Mapped[str | None] = mapped_column(Text)
    reservations: Mapped[dict[str, Any]] = mapped_column()
    lease_expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        CheckConstraint("request_key ~ '^[0-9a-f]{64}$'", name="claude_message_batches_key_check"),
    )
