"""The pipeline's vocabulary as enums: kinds of model work, strategies, providers, priorities.

Column statuses (an interaction's, a reservation's...) live with the tables, in
:mod:`pipeline.db.status`. Every enum here is a ``StrEnum``: its members compare equal to, and
serialise as, their string values, so they travel through JSON (Celery messages, ``--json``
output) unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum


class TaskType(StrEnum):
    """The kinds of model work (the mission's six, plus the error-fix batch). The first three
    usually run on the local model, the next three usually on Claude; ``error_fix`` always runs
    on the local model and is never routed."""

    PATTERN_EXTRACTION = "pattern_extraction"
    RELATIONSHIP_MAPPING = "relationship_mapping"
    CONTENT_ANALYSIS = "content_analysis"
    STRATEGIC_ANALYSIS = "strategic_analysis"
    COMPLEX_REASONING = "complex_reasoning"
    DECISION_MAKING = "decision_making"
    ERROR_FIX = "error_fix"


#: The task types routing places (everything but the error-fix batch).
ROUTED_TASK_TYPES: tuple[TaskType, ...] = tuple(t for t in TaskType if t is not TaskType.ERROR_FIX)


class Strategy(StrEnum):
    """How work is split between the local model and Claude (``PATTERNS_LLM_STRATEGY``)."""

    CLAUDE_ONLY = "claude_only"
    LOCAL_ONLY = "local_only"
    HYBRID = "hybrid"
    LOCAL_FALLBACK = "local_fallback"


class Provider(StrEnum):
    """Who runs a model call; the values of ``llm_calls.provider``."""

    LOCAL = "local"
    CLAUDE = "claude"


class Priority(StrEnum):
    """How urgent a piece of work is: ``emergency`` work may spend up to the emergency budget.
    An interaction's metadata ``"priority": "emergency"`` makes it so."""

    NORMAL = "normal"
    EMERGENCY = "emergency"


class ClaudeMode(StrEnum):
    """How work routed to Claude is sent: one Messages API call per request (``sync``), or the
    Message Batches API at half price (``batch``, ``patterns run --claude-batch``)."""

    SYNC = "sync"
    BATCH = "batch"


Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: a long job reports how far a stage (``ingest``,
``models``, ``extract``, ``embed``...) has come; ``total`` is 0 when unknown."""
