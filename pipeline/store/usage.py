"""Usage: every time a pattern is served (a search hit, a GitHub feedback comment) it gets a
``pattern_usage`` row and its ``usage_count`` follows, in the serving transaction.

``usage_count`` is a counter, incremented with each row (and carried over with the rows a merge
moves: :func:`pipeline.store.merge.refresh`), so serving costs the same however often a pattern
was served before; recounting its rows on every serving grew with its usage history.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import update
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
    ``usage_count`` incremented by one: two statements, whatever the patterns' usage history.
    Concurrent servings of one pattern each add their one under the row's lock, so none is
    lost (a recount in each serving transaction could miss the other's uncommitted row).

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
    session.execute(
        update(Pattern).where(Pattern.id.in_(ids)).values(usage_count=Pattern.usage_count + 1),
        execution_options={"synchronize_session": False},
    )
