"""Counting what is in the database: the run summary and ``patterns stats``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from pipeline.attempts import OUTCOME_DEFERRED
from pipeline.db.models import (
    Base,
    Interaction,
    LLMCall,
    Pattern,
    PatternRelationship,
    PatternValidation,
    Recommendation,
)


def interaction_outcomes(session: Session, ids: Sequence[int]) -> dict[str, Any]:
    """Counts over a set of interactions and everything derived from them.

    Returns keys ``interactions``, ``by_status`` (status → n), ``patterns``, ``embedded``,
    ``relationships``, ``validations`` (recorded by these interactions' patterns),
    ``llm_calls`` (provider → n, retries included; calls the budget deferred are not counted),
    ``tokens_in``, ``tokens_out``, ``cost_usd``, ``recommendations``, ``analyses`` (analysis
    status → n), ``deferred_to_local`` (Claude calls the budget or Claude's availability sent
    back to the local model) and ``failure_reasons`` (last error → n over failed ones).
    """
    id_list = list(ids)
    by_status = dict(
        session.execute(
            select(Interaction.status, func.count())
            .where(Interaction.id.in_(id_list))
            .group_by(Interaction.status)
        ).all()
    )
    patterns, embedded = session.execute(
        select(func.count(), func.count(Pattern.embedding)).where(
            Pattern.source_interaction_id.in_(id_list)
        )
    ).one()
    relationships = session.scalar(
        select(func.count()).where(PatternRelationship.source_interaction_id.in_(id_list))
    )
    validations = session.scalar(
        select(func.count()).where(PatternValidation.interaction_id.in_(id_list))
    )
    calls: dict[str, int] = {"local": 0, "claude": 0}
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
        .where(LLMCall.interaction_id.in_(id_list), LLMCall.outcome != OUTCOME_DEFERRED)
        .group_by(LLMCall.provider)
    ).all():
        calls[provider] = int(n)
        tokens_in += int(tin)
        tokens_out += int(tout)
        cost += float(usd)
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
    deferred = session.scalar(
        select(func.count()).where(
            LLMCall.interaction_id.in_(id_list), LLMCall.outcome == OUTCOME_DEFERRED
        )
    )
    reasons = dict(
        session.execute(
            select(Interaction.last_error, func.count())
            .where(Interaction.id.in_(id_list), Interaction.status.in_(["failed", "dead"]))
            .group_by(Interaction.last_error)
        ).all()
    )
    return {
        "interactions": len(set(id_list)),
        "by_status": {k: int(v) for k, v in by_status.items()},
        "patterns": int(patterns),
        "embedded": int(embedded),
        "relationships": int(relationships or 0),
        "validations": int(validations or 0),
        "llm_calls": calls,
        "tokens_in": tokens_in,
        "tokens_out": tokens_out,
        "cost_usd": round(cost, 6),
        "recommendations": int(recommendations or 0),
        "analyses": {str(k): int(v) for k, v in analyses.items()},
        "deferred_to_local": int(deferred or 0),
        "failure_reasons": {str(k): int(v) for k, v in reasons.items()},
    }


def table_counts(session: Session) -> dict[str, Any]:
    """Row counts of every table, plus interactions by status and llm_calls by provider."""
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
    counts["llm_calls_by_provider"] = {
        k: int(v)
        for k, v in session.execute(
            select(LLMCall.provider, func.count()).group_by(LLMCall.provider)
        ).all()
    }
    return counts
