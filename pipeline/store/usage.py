"""Usage: every time a pattern is served (a search hit, a GitHub feedback comment) it gets a
``pattern_usage`` row and its ``usage_count`` follows, in the serving transaction."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.models import Pattern, PatternUsage

#: ``pattern_usage.outcome`` of a serving whose outcome nobody reported (yet).
UNKNOWN = "unknown"


def record_usage(
    session: Session,
    served: Mapping[uuid.UUID, uuid.UUID],
    *,
    used_by: str,
    context: Mapping[str, Any],
) -> None:
    """One ``pattern_usage`` row per served pattern (id → its project id), and each pattern's
    ``usage_count`` recounted from its rows.

    Args:
        used_by: who was served: ``search:api``, ``search:cli``, ``feedback:github``...
        context: what the serving was about (the query, the delivery), stored with each row.
    """
    if not served:
        return
    ids: Sequence[uuid.UUID] = sorted(served, key=str)
    session.execute(
        insert(PatternUsage),
        [
            {
                "project_id": served[pid],
                "pattern_id": pid,
                "used_by": used_by,
                "context": dict(context),
                "outcome": UNKNOWN,
            }
            for pid in ids
        ],
    )
    counted = (
        select(func.count())
        .where(PatternUsage.pattern_id == Pattern.id)
        .correlate(Pattern)
        .scalar_subquery()
    )
    session.execute(
        update(Pattern).where(Pattern.id.in_(ids)).values(usage_count=counted),
        execution_options={"synchronize_session": False},
    )
