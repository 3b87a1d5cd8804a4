"""Search: the active patterns nearest a text, by cosine distance over the HNSW index, with
where each came from.

Scores are ``1 - d/2`` for cosine distance ``d`` in [0, 2]: 1 for the same direction, 0.5 for
orthogonal, 0 for opposite (the embeddings are unit vectors). Every hit is recorded as a usage
(:mod:`pipeline.store.usage`). The query runs under the project's row-level security; a search
over every project (the operator CLI without ``--project``) says so with :data:`ALL_PROJECTS`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select, text, union
from sqlalchemy.orm import Session

from pipeline.db.engine import ALL_PROJECTS, Database, ProjectScope
from pipeline.db.models import Interaction, Pattern, PatternValidation, Project
from pipeline.db.status import ValidationType
from pipeline.store.usage import record_usage

#: Candidate vectors HNSW examines per search (pgvector ``hnsw.ef_search``; its default is 40).
#: Measured over 100,000 stored vectors on the migration's index (m 16, ef_construction 64;
#: bench/search_recall.py, docs/PERFORMANCE.md): recall@10 against an exact scan 0.89 at 100,
#: 0.957 at 200 (within sampling error of the 0.95 goal), 0.987 at 400, at about 65 % of the
#: statement's queries/s at 200; search() as a whole is bound by its usage writes.
EF_SEARCH = 400
#: Most results a search returns.
MAX_K = 100


@dataclass(frozen=True)
class Source:
    """An interaction a pattern (or a pattern merged into it) was extracted from."""

    interaction_id: int
    kind: str
    url: str | None

    def as_json(self) -> dict[str, Any]:
        """``{"interaction_id", "kind", "url"}``."""
        return {"interaction_id": self.interaction_id, "kind": self.kind, "url": self.url}


@dataclass(frozen=True)
class Hit:
    """One search result."""

    id: uuid.UUID
    project: str
    type: str
    title: str
    description: str
    score: float
    validation_count: int
    pattern_strength: float
    validation_status: str
    usage_count: int
    sources: list[Source] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        """The result object of ``GET /v1/patterns/search``."""
        return {
            "id": str(self.id),
            "type": self.type,
            "title": self.title,
            "description": self.description,
            "score": self.score,
            "validation_count": self.validation_count,
            "pattern_strength": self.pattern_strength,
            "validation_status": self.validation_status,
            "usage_count": self.usage_count,
            "sources": [s.as_json() for s in self.sources],
        }


def search(
    db: Database,
    vector: Sequence[float],
    *,
    project_id: uuid.UUID | None,
    k: int = 10,
    type_: str | None = None,
    status: str | None = None,
    used_by: str = "search",
    query: str = "",
) -> list[Hit]:
    """The ``k`` active, embedded patterns nearest ``vector`` (a unit 384-d embedding of the
    query), best first, with their sources; each hit is recorded as a usage.

    Args:
        project_id: the project searched (its row-level security applies); ``None``: every
            project (operators).
        type_, status: only patterns of this type / validation status.
    """
    k = max(1, min(k, MAX_K))
    scope = ProjectScope(project_id) if project_id is not None else ALL_PROJECTS
    with db.session(scope) as session:
        session.execute(text(f"SET LOCAL hnsw.ef_search = {max(EF_SEARCH, k)}"))
        session.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
        distance = Pattern.embedding.cosine_distance(list(vector))
        query_rows = (
            select(Pattern, Project.name, distance.label("d"))
            .join(Project, Project.id == Pattern.project_id)
            .where(Pattern.is_active.is_(True), Pattern.embedding.is_not(None))
            .order_by(distance)
            .limit(k)
        )
        if project_id is not None:
            query_rows = query_rows.where(Pattern.project_id == project_id)
        if type_:
            query_rows = query_rows.where(Pattern.type == type_)
        if status:
            query_rows = query_rows.where(Pattern.validation_status == status)
        rows = sorted(session.execute(query_rows).all(), key=lambda r: float(r.d))
        sources = sources_of(session, [r.Pattern.id for r in rows])
        hits = [_hit(row, sources) for row in rows]
        record_usage(
            session,
            {r.Pattern.id: r.Pattern.project_id for r in rows},
            used_by=used_by,
            context={"query": query[:200]},
        )
    return hits


def _hit(row: Any, sources: dict[uuid.UUID, list[Source]]) -> Hit:
    p: Pattern = row.Pattern
    return Hit(
        id=p.id, project=str(row.name), type=p.type, title=p.title,
        description=str(p.content.get("description") or ""),
        score=round(max(0.0, min(1.0, 1.0 - float(row.d) / 2)), 4),
        validation_count=p.validation_count, pattern_strength=p.pattern_strength,
        validation_status=p.validation_status, usage_count=p.usage_count + 1,
        sources=sources.get(p.id, []),
    )  # fmt: skip


def sources_of(session: Session, pattern_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, list[Source]]:
    """Per pattern, the interactions it came from: its own, then those of the patterns merged
    into it (its ``merge`` validations), oldest first."""
    if not pattern_ids:
        return {}
    own = select(
        Pattern.id.label("owner"), Interaction.id, Interaction.kind, Interaction.external_id
    ).join(Interaction, Interaction.id == Pattern.source_interaction_id)
    merged = select(
        PatternValidation.pattern_id.label("owner"),
        Interaction.id,
        Interaction.kind,
        Interaction.external_id,
    ).join(Interaction, Interaction.id == PatternValidation.interaction_id)
    rows = session.execute(
        union(
            own.where(Pattern.id.in_(pattern_ids)),
            merged.where(
                PatternValidation.pattern_id.in_(pattern_ids),
                PatternValidation.validation_type == ValidationType.MERGE,
            ),
        ).order_by(text("2"))
    ).all()
    out: dict[uuid.UUID, list[Source]] = {}
    for owner_id, iid, kind, url in rows:
        out.setdefault(owner_id, []).append(Source(iid, kind, url))
    return out
