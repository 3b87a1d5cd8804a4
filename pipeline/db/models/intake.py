"""Tables of the intake side: projects and their members, interactions (the outbox), GitHub
deliveries and API keys."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db.models.base import Base, _created, _project_fk, _uuid_pk
from pipeline.db.status import (
    AnalysisStatus,
    InteractionStatus,
    check_in,
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
    #: 0-1, from :func:`pipeline.spend.routing.complexity`, set when the interaction is first
    #: routed.
    complexity: Mapped[float | None] = mapped_column(Float)
    #: Strategic analysis (AnalysisStatus): NULL (not needed), pending, done or failed.
    analysis_status: Mapped[str | None] = mapped_column(Text)
    analysis_error: Mapped[str | None] = mapped_column(Text)
    occurred_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    queued_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    processed_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: Who holds it for extraction (an extract task's id; see pipeline.extract.claim) and until
    #: when: a lapsed lease is free again.
    lease_owner: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    #: Extract claims not followed by a clean release (a killed worker's): see
    #: pipeline.extract.claim; over extract_max_starts, the interaction goes dead.
    extract_starts: Mapped[int] = mapped_column(Integer, server_default="0")
    #: The extractor said it carries no reusable lesson (no patterns): counted as
    #: ``skipped_trivial`` (migration 0009).
    trivial: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        check_in("status", InteractionStatus, "interactions_status_check"),
        check_in("analysis_status", AnalysisStatus, "interactions_analysis_status_check"),
        Index("ix_interactions_status_updated", "status", "updated_at"),
        Index("ix_interactions_project", "project_id"),
        Index(
            "ix_interactions_top_up",
            "id",
            postgresql_where=text("status = 'queued' AND complexity IS NULL"),
        ),
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
    outcome: Mapped[str] = mapped_column(Text)  # DeliveryOutcome
    skip_reason: Mapped[str | None] = mapped_column(Text)
    feedback_comment_id: Mapped[int | None] = mapped_column(BigInteger)
    feedback_posted_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    received_at: Mapped[dt.datetime] = _created()


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
