"""The values of every status-like column, as ``StrEnum``s, and the ``CHECK`` constraints built
from them (:func:`check_in`), so the Python side and the database agree on one list.

Members compare equal to their string values, so ``Interaction.status == InteractionStatus.QUEUED``
and rows read back as plain strings work alike.
"""

from __future__ import annotations

from enum import StrEnum

from sqlalchemy import CheckConstraint


class InteractionStatus(StrEnum):
    """Life of an interaction in the outbox (``interactions.status``).

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


#: Statuses an interaction never leaves.
TERMINAL_STATUSES = frozenset(
    {
        InteractionStatus.EXTRACTED,
        InteractionStatus.FAILED,
        InteractionStatus.DEAD,
        InteractionStatus.SKIPPED,
    }
)
#: Statuses of interactions still waiting for extraction.
WAITING_STATUSES = (InteractionStatus.RECEIVED, InteractionStatus.QUEUED)


class AnalysisStatus(StrEnum):
    """Strategic analysis of an interaction (``interactions.analysis_status``; NULL: none
    needed)."""

    PENDING = "pending"
    DONE = "done"
    FAILED = "failed"


class ExtractionMethod(StrEnum):
    """How a pattern or relationship was obtained (the mission's ``extraction_method``)."""

    LOCAL_LLM = "local_llm"
    COMMERCIAL_LLM = "commercial_llm"
    MANUAL = "manual"


class ValidationStatus(StrEnum):
    """Where a pattern stands (``patterns.validation_status``)."""

    PENDING = "pending"
    VALIDATED = "validated"
    REJECTED = "rejected"
    CONTESTED = "contested"
    CONTRADICTED = "contradicted"


class ValidationType(StrEnum):
    """Where a piece of evidence comes from (``pattern_validations.validation_type``): ``merge``,
    a later interaction extracted the same idea (same normalised title and type, or within the
    merge distance); ``conflict``, a later interaction's pattern ``conflicts_with`` it (a
    contradiction); ``review``, a person; ``cross_check``, another model."""

    MERGE = "merge"
    CONFLICT = "conflict"
    REVIEW = "review"
    CROSS_CHECK = "cross_check"


class EventType(StrEnum):
    """What the live feed reports (``pattern_events.event_type``), ``<entity>.<verb>``."""

    INTERACTION_RECEIVED = "interaction.received"
    PATTERN_CREATED = "pattern.created"
    PATTERN_MERGED = "pattern.merged"
    PATTERN_VALIDATED = "pattern.validated"
    PATTERN_CONTRADICTED = "pattern.contradicted"
    PATTERN_SUPERSEDED = "pattern.superseded"


class ValidationResult(StrEnum):
    """What one piece of evidence says of a pattern (``pattern_validations.result``)."""

    CONFIRMED = "confirmed"
    CONTRADICTED = "contradicted"
    UNCERTAIN = "uncertain"


class DeliveryOutcome(StrEnum):
    """What became of a GitHub delivery (``webhook_deliveries.outcome``)."""

    STORED = "stored"
    SKIPPED = "skipped"


class CallOutcome(StrEnum):
    """How one model request ended (``llm_calls.outcome``). ``deferred``: the engine did not
    send it (budget, provider unavailable); no model answered, so it is not counted as a call."""

    OK = "ok"
    INVALID = "invalid"
    TRUNCATED = "truncated"
    ERROR = "error"
    DEFERRED = "deferred"


class ReservationStatus(StrEnum):
    """A budget reservation (``budget_reservations.status``): ``reserved`` (call in flight) →
    ``settled`` (real cost recorded) or ``released`` (no call made, or its worker died)."""

    RESERVED = "reserved"
    SETTLED = "settled"
    RELEASED = "released"


class TsErrorStatus(StrEnum):
    """A TypeScript error in the error-fix queue (``typescript_errors.status``)."""

    PENDING = "pending"
    PROCESSING = "processing"
    AI_SUGGESTED = "ai_suggested"
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"


class CodeAnalysisStatus(StrEnum):
    """A suggested fix (``code_analysis.status``); accepted ones are retrieval examples."""

    SUGGESTED = "suggested"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class VerdictSource(StrEnum):
    """Where a person's verdict on a feedback comment came from (``feedback_verdicts.source``):
    a 👍/👎 ``reaction`` on the comment, or a ``reply`` that quotes a listed pattern."""

    REACTION = "reaction"
    REPLY = "reply"


class FixCheck(StrEnum):
    """What the TypeScript compiler said of a suggested fix (``code_analysis.check_status``,
    ``typescript_errors.fix_check``): ``verified`` compiles and no longer reports its error
    code; ``does_not_compile``, its error code is gone but tsc reports others; ``unresolved``,
    tsc still reports its error code (or the fix does not parse); ``unchecked``, no tsc ran."""

    VERIFIED = "verified"
    DOES_NOT_COMPILE = "does_not_compile"
    UNRESOLVED = "unresolved"
    UNCHECKED = "unchecked"


def check_in(column: str, values: type[StrEnum], name: str) -> CheckConstraint:
    """``CHECK (<column> IN ('a','b',...))`` over every member of ``values``, named ``name``."""
    listed = ",".join(f"'{member.value}'" for member in values)
    return CheckConstraint(f"{column} IN ({listed})", name=name)
