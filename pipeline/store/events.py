"""The pattern event log (``pattern_events``) and the order it is read in.

Writers append events (:func:`record`) in the same transaction as the change they report; a
statement trigger sends ``NOTIFY pattern_events`` with the project per statement, which wakes the
live feed (:mod:`pipeline.api.feed`). Readers page through a project's events by id
(:func:`events_after`), and ``Last-Event-ID`` resumes after an id.

**Order.** An event id is taken when the row is inserted, but becomes visible at commit; if two
transactions of one project committed out of id order, a reader could see id 100 before id 99
appears and skip 99 forever. So every transaction that writes a project's events first takes
that project's writer lock (:func:`lock_projects`, a transaction-level advisory lock, projects
in one fixed order so two writers cannot deadlock) and holds it to commit: a project's event ids
become visible in id order. The same lock serialises the project's pattern writers, so two
workers cannot both create (or both merge into) the same idea.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.engine import Database, ProjectScope
from pipeline.db.models import PatternEvent
from pipeline.db.status import EventType

#: First key of the two-key advisory lock that serialises a project's writers ("pwrt").
PROJECT_LOCK_NAMESPACE = 0x7077_7274
#: Channel of the notifications (see the migration 0004 trigger).
CHANNEL = "pattern_events"


def lock_projects(session: Session, project_ids: Iterable[uuid.UUID]) -> None:
    """Take the writer lock of each project until the transaction ends, in one order (the
    projects' ids sorted), so concurrent writers of several projects cannot deadlock."""
    for project_id in sorted(set(project_ids), key=str):
        session.execute(
            text("SELECT pg_advisory_xact_lock(:ns, hashtext(:project))"),
            {"ns": PROJECT_LOCK_NAMESPACE, "project": str(project_id)},
        )


@dataclass(frozen=True)
class NewEvent:
    """An event to append: ``pattern_id`` is ``None`` for events about interactions."""

    project_id: uuid.UUID
    event_type: EventType
    payload: Mapping[str, Any]
    pattern_id: uuid.UUID | None = None


def record(session: Session, events: Sequence[NewEvent]) -> None:
    """Append events in one statement, inside the caller's transaction (which holds the
    projects' writer locks: :func:`lock_projects`)."""
    if not events:
        return
    session.execute(
        insert(PatternEvent).values(
            [
                {
                    "project_id": e.project_id,
                    "pattern_id": e.pattern_id,
                    "event_type": e.event_type.value,
                    "payload": dict(e.payload),
                }
                for e in events
            ]
        )
    )


@dataclass(frozen=True)
class Event:
    """One event as the feed serves it."""

    id: int
    event_type: str
    pattern_id: uuid.UUID | None
    payload: dict[str, Any]
    created_at: dt.datetime

    def as_json(self) -> dict[str, Any]:
        """The event's JSON object (the SSE ``data`` field)."""
        return {
            "id": self.id,
            "type": self.event_type,
            "pattern_id": str(self.pattern_id) if self.pattern_id else None,
            "payload": self.payload,
            "created_at": self.created_at.isoformat(),
        }


def _read_events(
    db: Database, project_id: uuid.UUID, *, after_id: int, limit: int, newest_first: bool
) -> list[Event]:
    with db.session(ProjectScope(project_id)) as session:
        rows = session.execute(
            select(
                PatternEvent.id,
                PatternEvent.event_type,
                PatternEvent.pattern_id,
                PatternEvent.payload,
                PatternEvent.created_at,
            )
            .where(PatternEvent.project_id == project_id, PatternEvent.id > after_id)
            .order_by(PatternEvent.id.desc() if newest_first else PatternEvent.id)
            .limit(limit)
        ).all()
    return [Event(r.id, r.event_type, r.pattern_id, dict(r.payload), r.created_at) for r in rows]


def events_after(db: Database, project_id: uuid.UUID, after_id: int, limit: int) -> list[Event]:
    """The project's events with an id above ``after_id``, oldest first, at most ``limit``; read
    under the project's row-level security."""
    return _read_events(db, project_id, after_id=after_id, limit=limit, newest_first=False)


def recent_events(db: Database, project_id: uuid.UUID, limit: int = 20) -> list[Event]:
    """The project's ``limit`` newest events, newest first (the explorer's feed page); read
    under the project's row-level security."""
    return _read_events(db, project_id, after_id=0, limit=limit, newest_first=True)


def last_event_id(db: Database, project_id: uuid.UUID) -> int:
    """The id of the project's newest event (0 when it has none)."""
    with db.session(ProjectScope(project_id)) as session:
        newest = session.scalar(
            select(PatternEvent.id)
            .where(PatternEvent.project_id == project_id)
            .order_by(PatternEvent.id.desc())
            .limit(1)
        )
    return int(newest or 0)
