"""Tables of the TypeScript error-fix batch: the errors and the suggested fixes."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db.models.base import EMBEDDING_DIM, Base, _created, _project_fk
from pipeline.db.status import (
    CodeAnalysisStatus,
    FixCheck,
    TsErrorStatus,
    check_in,
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
    status: Mapped[str] = mapped_column(Text, server_default=TsErrorStatus.PENDING.value)
    embedding: Mapped[Any] = mapped_column(Vector(EMBEDDING_DIM), nullable=True)
    suggested_fix: Mapped[str | None] = mapped_column(Text)
    fix_explanation: Mapped[str | None] = mapped_column(Text)
    fix_model: Mapped[str | None] = mapped_column(Text)
    fix_confidence: Mapped[float | None] = mapped_column(Float)
    failure_reason: Mapped[str | None] = mapped_column(Text)
    #: The compiler's word on ``suggested_fix`` (:class:`FixCheck`); NULL while there is none.
    fix_check: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = _created()
    updated_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        check_in("fix_check", FixCheck, "typescript_errors_fix_check_check"),
        UniqueConstraint(
            "project_id",
            "file_path",
            "line",
            "error_code",
            "message_hash",
            name="uq_typescript_errors_identity",
        ),
        check_in("status", TsErrorStatus, "typescript_errors_status_check"),
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
    status: Mapped[str] = mapped_column(Text, server_default=CodeAnalysisStatus.SUGGESTED.value)
    compiles: Mapped[bool | None] = mapped_column(Boolean)
    error_resolved: Mapped[bool | None] = mapped_column(Boolean)
    #: The compiler's word on ``fixed_code`` (:class:`FixCheck`), and on the model's first fix
    #: when tsc sent it back once (``compile_attempts`` 2: fixes checked; 0 when none was).
    check_status: Mapped[str] = mapped_column(Text, server_default=FixCheck.UNCHECKED.value)
    first_check_status: Mapped[str | None] = mapped_column(Text)
    compile_attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    #: tsc's diagnostics for ``fixed_code`` (``line L, col C: TSnnnn message`` strings).
    tsc_diagnostics: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    retrieved_example_ids: Mapped[list[Any]] = mapped_column(server_default=text("'[]'::jsonb"))
    embedding: Mapped[Any] = mapped_column(Vector(EMBEDDING_DIM), nullable=True)
    created_at: Mapped[dt.datetime] = _created()
    __table_args__ = (
        check_in("status", CodeAnalysisStatus, "code_analysis_status_check"),
        check_in("check_status", FixCheck, "code_analysis_check_status_check"),
        check_in("first_check_status", FixCheck, "code_analysis_first_check_status_check"),
        Index("ix_code_analysis_status", "status"),
        Index(
            "ix_code_analysis_embedding_hnsw",
            "embedding",
            postgresql_using="hnsw",
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )
