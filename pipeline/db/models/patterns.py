"""Tables of the pattern store: patterns, their relationships, validations, usage and events, and
the recommendations of strategic analysis."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, UUID
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db.models.base import EMBEDDING_DIM, Base, _created, _project_fk, _uuid_pk
from pipeline.db.status import (
    ExtractionMethod,
    ValidationResult,
    ValidationStatus,
    check_in,
)


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
    validation_status: Mapped[str] = mapped_column(
        Text, server_default=ValidationStatus.PENDING.value
    )
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
    extraction_method: Mapped[str] = mapped_column(
        Text, server_default=ExtractionMethod.LOCAL_LLM.value
    )
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
        check_in("extraction_method", ExtractionMethod, "patterns_extraction_method_check"),
        check_in("validation_status", ValidationStatus, "patterns_validation_status_check"),
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
    extraction_method: Mapped[str] = mapped_column(
        Text, server_default=ExtractionMethod.LOCAL_LLM.value
    )
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
        check_in("result", ValidationResult, "pattern_validations_result_check"),
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
