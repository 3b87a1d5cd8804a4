"""Counting what is in the database: the run summary's figures and ``patterns stats``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from pipeline.db.models import (
    Base,
    Interaction,
    LLMCall,
    Pattern,
    PatternRelationship,
    PatternValidation,
    Recommendation,
)
from pipeline.db.status import CallOutcome, InteractionStatus, ValidationType
from pipeline.types import Provider


@dataclass(frozen=True)
class Outcomes:
    """Counts over a set of interactions and everything derived from them.

    ``by_status``: interaction status → n. ``patterns``: extracted from them, of which
    ``patterns_active`` stand on their own and ``merged`` were folded into a twin (an earlier
    sighting of the same idea). ``validations``: recorded by these interactions' patterns.
    ``llm_calls``: provider → calls that reached a model (retries included; calls the budget
    deferred and requests answered from the response cache are not counted). ``cost_usd``:
    their dollars. ``cache_hits``: requests answered from the exact response cache
    (:mod:`pipeline.extract.cache`: extraction and strategic analysis), which reached no model.
    ``analyses``: strategic analysis status → n. ``deferred_to_local``: Claude calls the budget
    or Claude's availability sent back to the local model. ``failure_reasons``: last error → n
    over failed and dead ones.
    """

    interactions: int
    by_status: Mapping[str, int]
    patterns: int
    embedded: int
    patterns_active: int
    merged: int
    relationships: int
    validations: int
    llm_calls: Mapping[str, int]
    tokens_in: int
    tokens_out: int
    cost_usd: float
    recommendations: int
    analyses: Mapping[str, int] = field(default_factory=dict)
    deferred_to_local: int = 0
    failure_reasons: Mapping[str, int] = field(default_factory=dict)
    cache_hits: int = 0
    #: Extracted interactions the model called trivial (no reusable lesson, no patterns).
    skipped_trivial: int = 0

    def count(self, *statuses: InteractionStatus) -> int:
        """Interactions in any of ``statuses``."""
        return sum(self.by_status.get(s.value, 0) for s in statuses)


def interaction_outcomes(session: Session, ids: Sequence[int]) -> Outcomes:
    """The :class:`Outcomes` of the interactions ``ids``, read in ``session``."""
    id_list = list(ids)
    by_status = dict(
        session.execute(
            select(Interaction.status, func.count())
            .where(Interaction.id.in_(id_list))
            .group_by(Interaction.status)
        ).all()
    )
    trivial = session.scalar(
        select(func.count()).where(Interaction.id.in_(id_list), Interaction.trivial)
    )
    patterns, embedded, active = session.execute(
        select(
            func.count(), func.count(Pattern.embedding), func.count().filter(Pattern.is_active)
        ).where(Pattern.source_interaction_id.in_(id_list))
    ).one()
    merged = session.scalar(
        select(func.count()).where(
            PatternValidation.validation_type == ValidationType.MERGE,
            PatternValidation.interaction_id.in_(id_list),
        )
    )
    relationships = session.scalar(
        select(func.count()).where(PatternRelationship.source_interaction_id.in_(id_list))
    )
    validations = session.scalar(
        select(func.count()).where(PatternValidation.interaction_id.in_(id_list))
    )
    calls, tokens_in, tokens_out, cost = _llm_totals(session, id_list)
    recommendations = session.scalar(
        select(func.count()).where(Recommendation.interaction_id.in_(id_list))
    )
    analyses = dict(
        session.execute(
            select(Interaction.analysis_status, func.count())
            .where(Interaction.id.in_(id_list), Interaction.analysis_status.is_not(None))
            .group_by(Interaction.analysis_status)
        ).all()
    )
    deferred, hits = session.execute(
        select(
            func.count().filter(LLMCall.outcome == CallOutcome.DEFERRED),
            func.count().filter(LLMCall.cache_hit),
        ).where(LLMCall.interaction_id.in_(id_list))
    ).one()
    reasons = dict(
        session.execute(
            select(Interaction.last_error, func.count())
            .where(
                Interaction.id.in_(id_list),
                Interaction.status.in_([InteractionStatus.FAILED, InteractionStatus.DEAD]),
            )
            .group_by(Interaction.last_error)
        ).all()
    )
    return Outcomes(
        interactions=len(set(id_list)),
        by_status={str(k): int(v) for k, v in by_status.items()},
        patterns=int(patterns),
        embedded=int(embedded),
        patterns_active=int(active),
        merged=int(merged or 0),
        relationships=int(relationships or 0),
        validations=int(validations or 0),
        llm_calls=calls,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost_usd=round(cost, 6),
        recommendations=int(recommendations or 0),
        analyses={str(k): int(v) for k, v in analyses.items()},
        deferred_to_local=int(deferred or 0),
        failure_reasons={str(k): int(v) for k, v in reasons.items()},
        cache_hits=int(hits or 0),
        skipped_trivial=int(trivial or 0),
    )


def _llm_totals(session: Session, id_list: list[int]) -> tuple[dict[str, int], int, int, float]:
    """Calls per provider, input and output tokens and dollars of the model requests made for
    the interactions (deferred ones, never sent, and cache hits, never sent either, left out)."""
    calls: dict[str, int] = {p.value: 0 for p in Provider}
    tokens_in = tokens_out = 0
    cost = 0.0
    for provider, n, tin, tout, usd in session.execute(
        select(
            LLMCall.provider,
            func.count(),
            func.coalesce(func.sum(LLMCall.tokens_in), 0),
            func.coalesce(func.sum(LLMCall.tokens_out), 0),
            func.coalesce(func.sum(LLMCall.cost_usd), 0),
        )
        .where(
            LLMCall.interaction_id.in_(id_list),
            LLMCall.outcome != CallOutcome.DEFERRED,
            LLMCall.cache_hit.is_(False),
        )
        .group_by(LLMCall.provider)
    ).all():
        calls[provider] = int(n)
        tokens_in += int(tin)
        tokens_out += int(tout)
        cost += float(usd)
    return calls, tokens_in, tokens_out, cost


def cache_hit_rate(hits: int, model_calls: int) -> float | None:
    """The response cache's hit rate: ``hits / (hits + model_calls)``, 0 to 1; ``None`` when
    there were neither."""
    total = hits + model_calls
    return hits / total if total else None


def table_counts(session: Session) -> dict[str, Any]:
    """Row counts of every table, plus interactions by status, active patterns, merges,
    llm_calls that reached a model by provider (deferred and cache hits left out), and the
    response cache's hits and hit rate (``hits / (hits + model calls)``, null with neither)."""
    counts: dict[str, Any] = {
        table: int(session.scalar(text(f'SELECT count(*) FROM "{table}"')) or 0)
        for table in sorted(Base.metadata.tables)
    }
    counts["interactions_by_status"] = {
        k: int(v)
        for k, v in session.execute(
            select(Interaction.status, func.count()).group_by(Interaction.status)
        ).all()
    }
    counts["patterns_active"] = int(
        session.scalar(select(func.count()).where(Pattern.is_active.is_(True))) or 0
    )
    counts["merged"] = int(
        session.scalar(
            select(func.count()).where(PatternValidation.validation_type == ValidationType.MERGE)
        )
        or 0
    )
    counts["llm_calls_by_provider"] = {
        k: int(v)
        for k, v in session.execute(
            select(LLMCall.provider, func.count())
            .where(LLMCall.cache_hit.is_(False), LLMCall.outcome != CallOutcome.DEFERRED)
            .group_by(LLMCall.provider)
        ).all()
    }
    hits = int(session.scalar(select(func.count()).where(LLMCall.cache_hit)) or 0)
    counts["cache_hits"] = hits
    calls = sum(counts["llm_calls_by_provider"].values())
    counts["cache_hit_rate"] = cache_hit_rate(hits, calls)
    return counts
