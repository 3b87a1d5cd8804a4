"""Browsing a project's store: its active patterns page by page (keyset pagination), and its
graph (patterns as nodes, relationships as edges). Both read under the project's row-level
security."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, tuple_

from pipeline.db.engine import Database, ProjectScope
from pipeline.db.models import Pattern, PatternRelationship
from pipeline.errors import MalformedInputError

#: Most patterns per page, and most nodes of a graph.
MAX_PAGE = 500
MAX_NODES = 2000


def pattern_json(p: Pattern) -> dict[str, Any]:
    """A pattern as the read API shows it."""
    return {
        "id": str(p.id),
        "type": p.type,
        "title": p.title,
        "description": str(p.content.get("description") or ""),
        "evidence": str(p.content.get("evidence") or ""),
        "confidence": p.confidence,
        "pattern_strength": p.pattern_strength,
        "validation_count": p.validation_count,
        "contradiction_count": p.contradiction_count,
        "validation_status": p.validation_status,
        "usage_count": p.usage_count,
        "extraction_method": p.extraction_method,
        "source_interaction_id": p.source_interaction_id,
        "created_at": p.created_at.isoformat(),
    }


def encode_cursor(created_at: dt.datetime, pattern_id: uuid.UUID) -> str:
    """The opaque cursor after a pattern: base64url of ``<created_at ISO>|<id>``."""
    raw = f"{created_at.isoformat()}|{pattern_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[dt.datetime, uuid.UUID]:
    """The position a cursor names.

    Raises:
        MalformedInputError: not a cursor this API gave out.
    """
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, _, pid = raw.partition("|")
        return dt.datetime.fromisoformat(when), uuid.UUID(pid)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise MalformedInputError("cursor is not one this API gave out") from exc


@dataclass(frozen=True)
class Page:
    """One page of patterns and the cursor of the next (``None`` on the last)."""

    items: list[dict[str, Any]]
    next_cursor: str | None


def list_patterns(
    db: Database,
    project_id: uuid.UUID,
    *,
    type_: str | None = None,
    status: str | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> Page:
    """The project's active patterns, oldest first, ``limit`` at a time (at most
    :data:`MAX_PAGE`), after ``cursor``.

    Raises:
        MalformedInputError: a cursor this API did not give out.
    """
    limit = max(1, min(limit, MAX_PAGE))
    query = (
        select(Pattern)
        .where(Pattern.project_id == project_id, Pattern.is_active.is_(True))
        .order_by(Pattern.created_at, Pattern.id)
        .limit(limit + 1)
    )
    if type_:
        query = query.where(Pattern.type == type_)
    if status:
        query = query.where(Pattern.validation_status == status)
    if cursor:
        query = query.where(tuple_(Pattern.created_at, Pattern.id) > decode_cursor(cursor))
    with db.session(ProjectScope(project_id)) as session:
        rows = session.scalars(query).all()
    more = len(rows) > limit
    rows = rows[:limit]
    after = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    return Page([pattern_json(p) for p in rows], after)


@dataclass(frozen=True)
class Graph:
    """A project's patterns (nodes) and the relationships between them (edges)."""

    nodes: list[dict[str, Any]]
    edges: list[dict[str, Any]]


def project_graph(db: Database, project_id: uuid.UUID, *, max_nodes: int = MAX_NODES) -> Graph:
    """The project's active patterns (the ``max_nodes`` strongest) and every relationship
    between two of them."""
    with db.session(ProjectScope(project_id)) as session:
        nodes = session.scalars(
            select(Pattern)
            .where(Pattern.project_id == project_id, Pattern.is_active.is_(True))
            .order_by(Pattern.pattern_strength.desc(), Pattern.created_at, Pattern.id)
            .limit(max(1, min(max_nodes, MAX_NODES)))
        ).all()
        ids = [p.id for p in nodes]
        edges = session.scalars(
            select(PatternRelationship).where(
                PatternRelationship.project_id == project_id,
                PatternRelationship.source_pattern_id.in_(ids),
                PatternRelationship.target_pattern_id.in_(ids),
            )
        ).all()
    return Graph(
        nodes=[pattern_json(p) for p in nodes],
        edges=[
            {
                "id": str(e.id),
                "source": str(e.source_pattern_id),
                "target": str(e.target_pattern_id),
                "type": e.relationship_type,
                "strength": e.strength,
                "confidence": e.confidence,
                "validation_count": e.validation_count,
                "contradiction_count": e.contradiction_count,
            }
            for e in edges
        ],
    )
