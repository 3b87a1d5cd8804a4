"""Counting what is in the database: the run summary and ``patterns stats``."""

from __future__ import annotations

from collections.abc import Sequence
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
)


def interaction_outcomes(session: Session, ids: Sequence[int]) -> dict[str, Any]:
    """Counts over a set of interactions and everything derived from them.

    Returns keys ``interactions``, ``by_status`` (status → n), ``patterns``, ``embedded``,
    ``relationships``, ``validations`` (recorded by these interactions' patterns),
    ``llm_calls`` (provider → n, retries included), ``tokens_in``, ``tokens_out``, ``cost_usd``.
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
        .where(LLMCall.interaction_id.in_(id_list))
        .group_by(LLMCall.provider)
    ).all():
        calls[provider] = int(n)
        tokens_in += int(tin)
        tokens_out += int(tout)
        cost += float(usd)
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
