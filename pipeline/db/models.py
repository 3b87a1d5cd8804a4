"""The Postgres data model (SQLAlchemy 2 declarative), mirrored by the Alembic revisions.

Tables from the mission's schema keep their names: ``projects``, ``project_members``, ``patterns``,
``pattern_relationships``, ``pattern_validations``, ``pattern_usage``, ``pattern_events``. Added by
this system: ``interactions`` (the outbox), ``webhook_deliveries``, ``llm_calls``, ``budget_days``,
``typescript_errors``, ``code_analysis``, ``recommendations`` and ``api_keys``.

Vectors are ``vector(EMBEDDING_DIM)`` with HNSW indexes on cosine distance (``vector_cosine_ops``).
Changing the embedding model to one of another width needs a new revision.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid
from decimal import Decimal
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

#: Width of every embedding column: all-MiniLM-L6-v2 gives 384-d vectors.
EMBEDDING_DIM = 384

#: Tables whose rows belong to one project: row-level security applies to them.
PROJECT_SCOPED_TABLES = (
    "project_members",
    "patterns",
    "pattern_relationships",
    "pattern_validations",
    "pattern_usage",
    "pattern_events",
    "interactions",
    "typescript_errors",
    "code_analysis",
    "recommendations",
)


class InteractionStatus(enum.StrEnum):
    """Life of an interaction in the outbox.

    ``received`` (committed, not yet published) → ``queued`` (task published) → ``extracted`` or
    ``failed`` (the model could not give a valid result: ``last_error`` says why) or ``dead``
    (gave up after too many delivery attempts). ``skipped`` has nothing to extract (empty text).
    """

    RECEIVED = "received"
    QUEUED = "queued"
    EXTRACTED = "extracted"
    FAILED = "failed"
    DEAD = "dead"
    SKIPPED = "skipped"


TERMINAL_STATUSES = frozenset(
    {
        InteractionStatus.EXTRACTED,
        InteractionStatus.FAILED,
        InteractionStatus.DEAD,
        InteractionStatus.SKIPPED,
    }
)


class ExtractionMethod(enum.StrEnum):
    """How a pattern or relationship was obtained (the mission's ``extraction_method``)."""

    LOCAL_LLM = "local_llm"
    COMMERCIAL_LLM = "commercial_llm"
    MANUAL = "manual"


class Base(DeclarativeBase):
    """Declarative base; ``type_annotation_map`` makes ``dict[str, Any]`` a JSONB column."""

    type_annotation_map = {dict[str, Any]: JSONB, list[Any]: JSONB}


def _uuid_pk() -> Mapped[uuid.UUID]:
    return mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()
    )


def _created() -> Mapped[dt.datetime]:
    return mapped_column(DateTime(timezone=True), server_default=func.now(), nullable=False)


def _project_fk(nullable: bool = False) -> Mapped[Any]:
    return mapped_column(
        UUID(as_uuid=True), ForeignKey("projects.id", ondelete="CASCADE"), nullable=nullable
    )


class Project(Base):
    """A repository or team, the unit of isolation; GitHub maps by ``github_repo_id``."""

    __tablename__ = "projects"
    id: Mapped[uuid.UUID] = _uuid_pk()
    name: Mapped[str] = mapped_column(Text, unique=True)
    github_repo_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    description: Mapped[str | None] = mapped_column(Text)
    settings: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()


class ProjectMember(Base):
    """A person (GitHub login) taking part in a project, with a role."""

    __tablename__ = "project_members"
    project_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True
    )
    user_login: Mapped[str] = mapped_column(Text, primary_key=True)
    role: Mapped[str] = mapped_column(Text, server_default="contributor")
    created_at: Mapped[dt.datetime] = _created()


class Interaction(Base):
    """One unit of developer activity to learn from; also the outbox row of its extract task.

    ``attempts`` counts how often its extract task was published (delivery attempts); model
    attempts are rows of ``llm_calls``.

    ``idempotency_key`` is ``github:<X-GitHub-Delivery>`` for deliveries, the client's key or
    ``sha256:<content hash>`` otherwise: inserting the same key twice is a no-op.
    """

    __tablename__ = "interactions"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[uuid.UUID] = _project_fk()
    source: Mapped[str] = mapped_column(Text)  # github | api | file
    kind: Mapped[str] = mapped_column(Text)  # pull_request | issue | issue_comment | conversation
    external_id: Mapped[str | None] = mapped_column(Text)  # e.g. the PR's html_url
    author: Mapped[str | None] = mapped_column(Text)
    idempotency_key: Mapped[str] = mapped_column(Text, unique=True)
    content: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    metadata_: Mapped[dict[str, Any]] = mapped_column(
        "metadata", server_default=text("'{}'::jsonb")
    )
    status: Mapped[str] = mapped_column(Text, server_default=InteractionStatus.RECEIVED.value)
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    last_error: Mapped[str | None] = mapped_column(Text)
    extraction_key: Mapped[str | None] = mapped_column(Text)
    #: 0-1, from :func:`pipeline.routing.complexity`, set when the interaction is first routed.
    complexity: Mapped[float | None] = mapped_column(Float)
    #: Strategic analysis: NULL (not needed), ``pending``, ``done`` or ``failed``.
    analysis_status: Mapped[str | None] = mapped_column(Text)
    analysis_error: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    queued_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        CheckConstraint(
            "status IN ('received','queued','extracted','failed','dead','skipped')",
            name="interactions_status_check",
        ),
        CheckConstraint(
            "analysis_status IN ('pending','done','failed')",
            name="interactions_analysis_status_check",
        ),
        Index("ix_interactions_status_updated", "status", "updated_at"),
        Index("ix_interactions_project", "project_id"),
        Index(
            "ix_interactions_analysis_pending",
            "updated_at",
            postgresql_where=text("analysis_status = 'pending'"),
        ),
    )


class WebhookDelivery(Base):
    """One GitHub webhook delivery, unique on ``X-GitHub-Delivery`` (``delivery_id``)."""

    __tablename__ = "webhook_deliveries"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    delivery_id: Mapped[str] = mapped_column(Text, unique=True)
    event: Mapped[str] = mapped_column(Text)
    action: Mapped[str | None] = mapped_column(Text)
    project_id: Mapped[uuid.UUID | None] = _project_fk(nullable=True)
    interaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("interactions.id", ondelete="SET NULL")
    )
    outcome: Mapped[str] = mapped_column(Text)  # stored | skipped
    skip_reason: Mapped[str | None] = mapped_column(Text)
    feedback_comment_id: Mapped[int | None] = mapped_column(BigInteger)
    feedback_posted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[dt.datetime] = _created()


class Pattern(Base):
    """A typed, reusable piece of knowledge extracted from an interaction.

    ``content`` holds ``{"description", "evidence"}``; ``embedding`` is the normalised embedding of
    ``title + description`` (null until the embed task ran). Unique on
    ``(source_interaction_id, extraction_key, title)`` so a re-run extraction cannot double rows.
    """

    __tablename__ = "patterns"
    id: Mapped[uuid.UUID] = _uuid_pk()
    project_id: Mapped[uuid.UUID] = _project_fk()
    type: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    content: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    confidence: Mapped[float] = mapped_column(Float, server_default="0.5")
    usage_count: Mapped[int] = mapped_column(Integer, server_default="0")
    success_rate: Mapped[float | None] = mapped_column(Float)
    embedding: Mapped[Any] = mapped_column(Vector(EMBEDDING_DIM), nullable=True)
    embedding_model: Mapped[str | None] = mapped_column(Text)
    validation_status: Mapped[str] = mapped_column(Text, server_default="pending")
    superseded_by: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("patterns.id", ondelete="SET NULL")
    )
    supersedes: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("patterns.id", ondelete="SET NULL")
    )
    is_active: Mapped[bool] = mapped_column(Boolean, server_default=text("true"))
    pattern_strength: Mapped[float] = mapped_column(Float, server_default="0.5")
    validation_count: Mapped[int] = mapped_column(Integer, server_default="0")
    contradiction_count: Mapped[int] = mapped_column(Integer, server_default="0")
    extraction_method: Mapped[str] = mapped_column(Text, server_default="local_llm")
    extraction_model: Mapped[str | None] = mapped_column(Text)
    extraction_confidence: Mapped[float | None] = mapped_column(Float)
    extraction_key: Mapped[str | None] = mapped_column(Text)
    source_interaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("interactions.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        UniqueConstraint(
            "source_interaction_id", "extraction_key", "title", name="uq_patterns_extraction"
        ),
        CheckConstraint(
            "extraction_method IN ('local_llm','commercial_llm','manual')",
            name="patterns_extraction_method_check",
        ),
        CheckConstraint(
            "validation_status IN ('pending','validated','rejected','contested')",
            name="patterns_validation_status_check",
        ),
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="patterns_confidence_check"),
        Index("ix_patterns_project_type", "project_id", "type"),
        Index("ix_patterns_source_interaction", "source_interaction_id"),
        Index(
            "ix_patterns_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )


class PatternRelationship(Base):
    """A typed edge between two patterns; unique on ``(source, target, type)``."""

    __tablename__ = "pattern_relationships"
    id: Mapped[uuid.UUID] = _uuid_pk()
    project_id: Mapped[uuid.UUID] = _project_fk()
    source_pattern_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("patterns.id", ondelete="CASCADE")
    )
    target_pattern_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("patterns.id", ondelete="CASCADE")
    )
    relationship_type: Mapped[str] = mapped_column(Text)
    strength: Mapped[float] = mapped_column(Float, server_default="0.5")
    confidence: Mapped[float] = mapped_column(Float, server_default="0.5")
    evidence: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    validation_count: Mapped[int] = mapped_column(Integer, server_default="0")
    contradiction_count: Mapped[int] = mapped_column(Integer, server_default="0")
    extraction_method: Mapped[str] = mapped_column(Text, server_default="local_llm")
    extraction_model: Mapped[str | None] = mapped_column(Text)
    source_interaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("interactions.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        UniqueConstraint(
            "source_pattern_id",
            "target_pattern_id",
            "relationship_type",
            name="uq_pattern_relationships_edge",
        ),
        CheckConstraint(
            "source_pattern_id <> target_pattern_id", name="pattern_relationships_no_self_loop"
        ),
        Index("ix_pattern_relationships_project", "project_id"),
        Index("ix_pattern_relationships_target", "target_pattern_id"),
    )


class PatternValidation(Base):
    """Evidence for or against a pattern (a later interaction, a reviewer, a model)."""

    __tablename__ = "pattern_validations"
    id: Mapped[uuid.UUID] = _uuid_pk()
    project_id: Mapped[uuid.UUID] = _project_fk()
    pattern_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("patterns.id", ondelete="CASCADE")
    )
    validator: Mapped[str] = mapped_column(Text)  # who or what validated: login, model name
    validation_type: Mapped[str] = mapped_column(Text)  # extraction | review | usage | model
    result: Mapped[str] = mapped_column(Text)  # confirmed | contradicted | uncertain
    confidence: Mapped[float] = mapped_column(Float, server_default="0.5")
    evidence: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    interaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("interactions.id", ondelete="SET NULL")
    )
    validating_pattern_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("patterns.id", ondelete="CASCADE")
    )
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        CheckConstraint(
            "result IN ('confirmed','contradicted','uncertain')",
            name="pattern_validations_result_check",
        ),
        UniqueConstraint(
            "pattern_id",
            "validating_pattern_id",
            "validation_type",
            name="uq_pattern_validations_pair",
        ),
        Index("ix_pattern_validations_pattern", "pattern_id"),
    )


class PatternUsage(Base):
    """A pattern applied somewhere, with its outcome; feeds ``usage_count`` and ``success_rate``."""

    __tablename__ = "pattern_usage"
    id: Mapped[uuid.UUID] = _uuid_pk()
    project_id: Mapped[uuid.UUID] = _project_fk()
    pattern_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("patterns.id", ondelete="CASCADE")
    )
    used_by: Mapped[str | None] = mapped_column(Text)
    context: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    outcome: Mapped[str] = mapped_column(Text, server_default="unknown")
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (Index("ix_pattern_usage_pattern", "pattern_id"),)


class PatternEvent(Base):
    """Append-only log of what happened to patterns (created, embedded, superseded, ...).

    The live feed (``GET /v1/projects/{id}/events``) reads it in ``id`` order.
    """

    __tablename__ = "pattern_events"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[uuid.UUID] = _project_fk()
    pattern_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("patterns.id", ondelete="CASCADE")
    )
    event_type: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(server_default=text("'{}'::jsonb"))
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (Index("ix_pattern_events_project_id", "project_id", "id"),)


class LLMCall(Base):
    """One model request: provider, model, tokens, cost and outcome.

    For a batched vLLM call there is one row per prompt; ``batch_id`` groups them and
    ``latency_ms`` is the wall time of the whole batched call that carried the prompt.
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
    outcome: Mapped[str] = mapped_column(Text)  # ok | invalid | truncated | error
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        Index("ix_llm_calls_created", "created_at"),
        Index("ix_llm_calls_interaction", "interaction_id"),
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
    priority: Mapped[str] = mapped_column(Text, server_default="normal")
    amount_usd: Mapped[Decimal] = mapped_column(Numeric(12, 6))
    actual_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    status: Mapped[str] = mapped_column(Text, server_default="reserved")
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        CheckConstraint(
            "priority IN ('normal','emergency')", name="budget_reservations_priority_check"
        ),
        CheckConstraint(
            "status IN ('reserved','settled','released')", name="budget_reservations_status_check"
        ),
        CheckConstraint(
            "amount_usd >= 0 AND (actual_usd IS NULL OR actual_usd >= 0)",
            name="budget_reservations_nonnegative",
        ),
        Index("ix_budget_reservations_status_created", "status", "created_at"),
    )


class TypeScriptError(Base):
    """A TypeScript compiler diagnostic waiting for (or given) a suggested fix."""

    __tablename__ = "typescript_errors"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[uuid.UUID] = _project_fk()
    file_path: Mapped[str] = mapped_column(Text)
    line: Mapped[int] = mapped_column(Integer)
    column: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str] = mapped_column(Text)
    error_message: Mapped[str] = mapped_column(Text)
    message_hash: Mapped[str] = mapped_column(String(64))
    code_snippet: Mapped[str | None] = mapped_column(Text)
    source: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    embedding: Mapped[Any] = mapped_column(Vector(EMBEDDING_DIM), nullable=True)
    suggested_fix: Mapped[str | None] = mapped_column(Text)
    fix_explanation: Mapped[str | None] = mapped_column(Text)
    fix_model: Mapped[str | None] = mapped_column(Text)
    fix_confidence: Mapped[float | None] = mapped_column(Float)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        UniqueConstraint(
            "project_id",
            "file_path",
            "line",
            "error_code",
            "message_hash",
            name="uq_typescript_errors_identity",
        ),
        CheckConstraint(
            "status IN ('pending','processing','ai_suggested','accepted','rejected','failed')",
            name="typescript_errors_status_check",
        ),
        Index("ix_typescript_errors_status", "status", "id"),
        Index(
            "ix_typescript_errors_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )


class CodeAnalysis(Base):
    """A suggested fix for a TypeScript error; accepted ones are retrieval examples."""

    __tablename__ = "code_analysis"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[uuid.UUID] = _project_fk()
    typescript_error_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("typescript_errors.id", ondelete="SET NULL")
    )
    error_code: Mapped[str] = mapped_column(Text)
    error_message: Mapped[str] = mapped_column(Text)
    code_snippet: Mapped[str | None] = mapped_column(Text)
    fixed_code: Mapped[str] = mapped_column(Text)
    explanation: Mapped[str | None] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Float)
    model: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="suggested")
    compiles: Mapped[bool | None] = mapped_column(Boolean)
    error_resolved: Mapped[bool | None] = mapped_column(Boolean)
    retrieved_example_ids: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    embedding: Mapped[Any] = mapped_column(Vector(EMBEDDING_DIM), nullable=True)
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        CheckConstraint(
            "status IN ('suggested','accepted','rejected')", name="code_analysis_status_check"
        ),
        Index("ix_code_analysis_status", "status"),
        Index(
            "ix_code_analysis_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )


class Recommendation(Base):
    """A recommendation from strategic analysis, linked to the patterns it concerns."""

    __tablename__ = "recommendations"
    id: Mapped[uuid.UUID] = _uuid_pk()
    project_id: Mapped[uuid.UUID] = _project_fk()
    interaction_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("interactions.id", ondelete="SET NULL")
    )
    title: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    priority: Mapped[str] = mapped_column(Text, server_default="medium")
    confidence: Mapped[float | None] = mapped_column(Float)
    pattern_ids: Mapped[list[uuid.UUID]] = mapped_column(
        ARRAY(UUID(as_uuid=True)), server_default=text("'{}'::uuid[]")
    )
    model: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(Text)  # local | claude
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (Index("ix_recommendations_interaction", "interaction_id"),)


class ApiKey(Base):
    """A per-project API key for ``POST /v1/interactions``; only its SHA-256 is stored."""

    __tablename__ = "api_keys"
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    project_id: Mapped[uuid.UUID] = _project_fk()
    name: Mapped[str] = mapped_column(Text)
    prefix: Mapped[str] = mapped_column(String(16))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = _created()
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
