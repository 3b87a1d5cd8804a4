"""The Postgres data model (SQLAlchemy 2 declarative), mirrored by the Alembic revisions.

Tables from the mission's schema keep their names: ``projects``, ``project_members``, ``patterns``,
``pattern_relationships``, ``pattern_validations``, ``pattern_usage``, ``pattern_events``. Added by
this system: ``interactions`` (the outbox), ``webhook_deliveries``, ``llm_calls``,
``llm_response_cache``, ``budget_days``, ``budget_reservations``, ``claude_message_batches``,
``typescript_errors``, ``code_analysis``, ``recommendations``, ``api_keys``,
``feedback_comments`` and ``feedback_verdicts``. One module per side of the pipeline:
:mod:`.intake`, :mod:`.patterns`, :mod:`.spend`, :mod:`.errorfix`, :mod:`.feedback`; status
values are enums in :mod:`pipeline.db.status`.

Vectors are ``vector(EMBEDDING_DIM)`` with HNSW indexes on cosine distance (``vector_cosine_ops``).
Changing the embedding model to one of another width needs a new revision.
"""

from __future__ import annotations

from pipeline.db.models.base import EMBEDDING_DIM, Base
from pipeline.db.models.errorfix import CodeAnalysis, TypeScriptError
from pipeline.db.models.feedback import FeedbackComment, FeedbackVerdict
from pipeline.db.models.intake import ApiKey, Interaction, Project, ProjectMember, WebhookDelivery
from pipeline.db.models.patterns import (
    Pattern,
    PatternEvent,
    PatternRelationship,
    PatternUsage,
    PatternValidation,
    Recommendation,
)
from pipeline.db.models.spend import (
    BudgetDay,
    BudgetReservation,
    ClaudeMessageBatch,
    LLMCall,
    ResponseCacheEntry,
)

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
    "llm_response_cache",
    "feedback_comments",
    "feedback_verdicts",
)

__all__ = [
    "EMBEDDING_DIM",
    "PROJECT_SCOPED_TABLES",
    "ApiKey",
    "Base",
    "BudgetDay",
    "BudgetReservation",
    "ClaudeMessageBatch",
    "CodeAnalysis",
    "FeedbackComment",
    "FeedbackVerdict",
    "Interaction",
    "LLMCall",
    "Pattern",
    "PatternEvent",
    "PatternRelationship",
    "PatternUsage",
    "PatternValidation",
    "Project",
    "ProjectMember",
    "Recommendation",
    "ResponseCacheEntry",
    "TypeScriptError",
    "WebhookDelivery",
]
