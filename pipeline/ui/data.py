"""What the explorer's pages read beyond the read API's own functions (search, browse, graph,
events, costs, report): one pattern with its evidence, validations and relationships, and a
project's latest events. Project reads run under the project's row-level security
(:class:`~pipeline.db.engine.ProjectScope`) and name the project in their WHERE clauses too.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import aliased

from pipeline.db.engine import Database, ProjectScope
from pipeline.db.models import Pattern, PatternRelationship, PatternUsage
from pipeline.db.models import PatternValidation as Validation
from pipeline.store.browse import pattern_json
from pipeline.store.search import Source, sources_of

#: Most rows of each list on a pattern's page.
DETAIL_ROWS = 200
#: Usage rows of GitHub feedback comments (:mod:`pipeline.github.feedback`).
FEEDBACK_USAGE = "feedback:github"


@dataclass(frozen=True)
class Related:
    """A relationship seen from one of its ends: the pattern at the other end."""

    pattern_id: str
    title: str
    pattern_type: str
    is_active: bool
    relationship_type: str
    strength: float
    confidence: float
    validation_count: int


@dataclass(frozen=True)
class PatternDetail:
    """A pattern's page: the pattern (as the read API shows it), where it came from, the
    evidence for and against it, its relationships out and in, and GitHub comments that showed
    it. ``merged_into`` is the canonical pattern when this one was folded into a twin."""

    pattern: dict[str, Any]
    is_active: bool
    merged_into: str | None
    sources: list[Source]
    validations: list[dict[str, Any]]
    outgoing: list[Related]
    incoming: list[Related]
    feedback: list[dict[str, Any]] = field(default_factory=list)


def _related(rows: Any) -> list[Related]:
    return [
        Related(
            pattern_id=str(other.id),
            title=other.title,
            pattern_type=other.type,
            is_active=other.is_active,
            relationship_type=edge.relationship_type,
            strength=edge.strength,
            confidence=edge.confidence,
            validation_count=edge.validation_count,
        )
        for edge, other in rows
    ]


def _validation_json(v: Validation) -> dict[str, Any]:
    evidence = v.evidence or {}
    return {
        "type": v.validation_type,
        "result": v.result,
        "validator": v.validator,
        "confidence": v.confidence,
        "interaction_id": v.interaction_id,
        "match": evidence.get("match"),
        "cosine_distance": evidence.get("cosine_distance"),
        "created_at": v.created_at,
    }


def pattern_detail(
    db: Database, project_id: uuid.UUID, pattern_id: uuid.UUID
) -> PatternDetail | None:
    """Pattern ``pattern_id`` of the project with everything its page shows; ``None`` when the
    project has no such pattern (another project's id looks the same: absent)."""
    other = aliased(Pattern)
    with db.session(ProjectScope(project_id)) as session:
        p = session.scalar(
            select(Pattern).where(Pattern.id == pattern_id, Pattern.project_id == project_id)
        )
        if p is None:
            return None
        validations = session.scalars(
            select(Validation)
            .where(Validation.pattern_id == p.id, Validation.project_id == project_id)
            .order_by(Validation.created_at, Validation.id)
            .limit(DETAIL_ROWS)
        ).all()
        edges = select(PatternRelationship, other).where(
            PatternRelationship.project_id == project_id
        )
        outgoing = session.execute(
            edges.join(other, other.id == PatternRelationship.target_pattern_id)
            .where(PatternRelationship.source_pattern_id == p.id)
            .order_by(PatternRelationship.strength.desc())
            .limit(DETAIL_ROWS)
        ).all()
        incoming = session.execute(
            edges.join(other, other.id == PatternRelationship.source_pattern_id)
            .where(PatternRelationship.target_pattern_id == p.id)
            .order_by(PatternRelationship.strength.desc())
            .limit(DETAIL_ROWS)
        ).all()
        feedback = session.execute(
            select(PatternUsage.context, PatternUsage.created_at)
            .where(PatternUsage.pattern_id == p.id, PatternUsage.used_by == FEEDBACK_USAGE)
            .order_by(PatternUsage.created_at)
            .limit(DETAIL_ROWS)
        ).all()
        return PatternDetail(
            pattern=pattern_json(p),
            is_active=p.is_active,
            merged_into=str(p.superseded_by) if p.superseded_by else None,
            sources=sources_of(session, [p.id]).get(p.id, []),
            validations=[_validation_json(v) for v in validations],
            outgoing=_related(outgoing),
            incoming=_related(incoming),
            feedback=[_feedback_json(ctx, at) for ctx, at in feedback],
        )


def _feedback_json(context: Any, created_at: Any) -> dict[str, Any]:
    return {**(context if isinstance(context, dict) else {}), "created_at": created_at}


def source_link(source: Source) -> str | None:
    """The source's URL when it is an ``http(s)`` one (a pull request's or issue's page), else
    ``None``: nothing else becomes a link."""
    url = source.url or ""
    return url if url.startswith(("https://", "http://")) else None
