"""Relationship resolution: the model names a relationship's ends by title; these become pattern
ids (:func:`resolve_relationships`, pure), with the project's earlier patterns found by
normalised title in SQL (:func:`project_titles`).
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.db.models import Pattern
from pipeline.extract.schemas import ExtractedRelationship
from pipeline.text import normalize_title


@dataclass(frozen=True)
class ResolvedRelationship:
    """A relationship whose ends are pattern ids."""

    source_id: uuid.UUID
    target_id: uuid.UUID
    relationship: ExtractedRelationship


def _match(
    name: str, local: Mapping[str, uuid.UUID], project: Mapping[str, uuid.UUID], cutoff: float
) -> uuid.UUID | None:
    key = normalize_title(name)
    if key in local:
        return local[key]
    if key in project:
        return project[key]
    close = difflib.get_close_matches(key, list(local), n=1, cutoff=cutoff)
    return local[close[0]] if close else None


def resolve_relationships(
    relationships: Sequence[ExtractedRelationship],
    local: Mapping[str, uuid.UUID],
    project: Mapping[str, uuid.UUID],
    cutoff: float,
) -> tuple[list[ResolvedRelationship], list[tuple[ExtractedRelationship, str]]]:
    """Resolve each relationship's source and target titles to pattern ids.

    A title matches, in order: a pattern of the same output by normalised title, an earlier
    pattern of the project by normalised title, a pattern of the same output whose normalised
    title is at least ``cutoff`` similar (difflib ratio). Self-loops and duplicates are dropped.

    Args:
        local: normalised title → id of the patterns of this output.
        project: normalised title → id of the project's earlier patterns.

    Returns:
        ``(resolved, unresolved)``; each unresolved item carries the reason.
    """
    resolved: list[ResolvedRelationship] = []
    unresolved: list[tuple[ExtractedRelationship, str]] = []
    seen: set[tuple[uuid.UUID, uuid.UUID, str]] = set()
    for rel in relationships:
        src = _match(rel.source, local, project, cutoff)
        tgt = _match(rel.target, local, project, cutoff)
        if src is None or tgt is None:
            missing = rel.source if src is None else rel.target
            unresolved.append((rel, f"no pattern titled {missing!r}"))
        elif src == tgt:
            unresolved.append((rel, "source and target are the same pattern"))
        elif (src, tgt, rel.type) in seen:
            unresolved.append((rel, "duplicate"))
        else:
            seen.add((src, tgt, rel.type))
            resolved.append(ResolvedRelationship(src, tgt, rel))
    return resolved, unresolved


def project_titles(
    session: Session, project_id: uuid.UUID, wanted: Iterable[str]
) -> dict[str, uuid.UUID]:
    """Normalised title → id of the project's active patterns whose normalised title is in
    ``wanted`` (the oldest pattern when several share a title)."""
    keys = sorted(set(wanted))
    if not keys:
        return {}
    # The same normalisation as pipeline.text.normalize_title, in SQL: lower-case, runs of
    # non-word characters to one space, trimmed.
    normalized = func.btrim(func.regexp_replace(func.lower(Pattern.title), r"[^\w]+", " ", "g"))
    found: dict[str, uuid.UUID] = {}
    for pid, title in session.execute(
        select(Pattern.id, Pattern.title)
        .where(
            Pattern.project_id == project_id,
            Pattern.is_active.is_(True),
            normalized.in_(keys),
        )
        .order_by(Pattern.created_at, Pattern.id)
    ).all():
        found.setdefault(normalize_title(title), pid)
    return found
