"""Placing work: read interactions and the day's budget, call the pure :func:`route` on each,
and say which go to the local model and which to Claude.

One budget snapshot serves a whole batch; each interaction routed to Claude adds its estimated
cost to the snapshot's ``reserved`` before the next is routed, so a batch of 32 does not send 32
calls to the Claude queue when the budget affords 3. The real guard is still the atomic
reservation each Claude call makes (:func:`pipeline.spend.reservations.reserve`).

Each interaction is scored on its own: one whose stored values make scoring fail is logged and
placed as if of complexity 0 (the local model), never failing the batch of other interactions
(of other projects, too) it travels with.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import structlog
from sqlalchemy import func, select, update

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction
from pipeline.db.status import AnalysisStatus, InteractionStatus
from pipeline.quality.agreement import with_measured_capability
from pipeline.settings import Settings
from pipeline.spend import pricing
from pipeline.spend.budget import budget_state
from pipeline.spend.routing import (
    RouteDecision,
    RoutingTask,
    complexity,
    estimate_tokens,
    needs_strategic_analysis,
    priority_of,
    route,
)
from pipeline.types import Priority, TaskType

log = structlog.get_logger(__name__)

#: Prompt tokens around the interaction text (system prompt, example turns, schema), for the
#: routing estimate only; measured with count_tokens on the extraction prompt: about 900.
PROMPT_OVERHEAD_TOKENS = 1000


@dataclass
class Placement:
    """Interaction ids by destination, with each one's route reason."""

    local: list[int] = field(default_factory=list)
    claude: list[int] = field(default_factory=list)
    reasons: dict[int, str] = field(default_factory=dict)


def estimated_cost(settings: Settings, content_chars: int, input_chars: int) -> Decimal:
    """Worst-case Claude cost of one request over an interaction, for routing: the text cut to
    ``input_chars`` at about 4 characters a token, plus :data:`PROMPT_OVERHEAD_TOKENS`, plus
    ``claude_max_tokens`` of output, at ``claude_model``'s price."""
    tokens = estimate_tokens(min(content_chars, input_chars)) + PROMPT_OVERHEAD_TOKENS
    return pricing.worst_case_usd(
        settings.claude_model, tokens, settings.claude_max_tokens, cache_ttl="5m"
    )


def _isolated_complexity(iid: int, content: str, metadata: Any) -> float | None:
    """:func:`~pipeline.spend.routing.complexity` of one interaction, or ``None`` (logged) when
    its stored values make scoring fail: one bad interaction must not fail its batch."""
    try:
        return complexity(content, metadata)
    except Exception as exc:  # isolation: whatever one row holds, the others go on
        log.warning("complexity_unavailable", interaction_id=iid, error=repr(exc)[:300])
        return None


def place(
    db: Database,
    settings: Settings,
    interaction_ids: Sequence[int],
    task_type: TaskType,
    *,
    local_failed: bool = False,
) -> Placement:
    """Route each interaction for ``task_type`` (see :func:`pipeline.spend.routing.route`), at the
    priority its metadata gives (:func:`pipeline.spend.routing.priority_of`).

    Computes and stores ``interactions.complexity`` where it is not set yet; an interaction that
    cannot be scored is placed at complexity 0 (unstored). Ids that do not exist are left out.
    The local capability scores are the measured cross-check agreement where there are enough
    samples (:func:`pipeline.quality.agreement.with_measured_capability`).
    """
    out = Placement()
    with db.session(ALL_PROJECTS) as session:
        rows = session.execute(
            select(
                Interaction.id,
                Interaction.content,
                Interaction.metadata_,
                Interaction.complexity,
            )
            .where(Interaction.id.in_(list(interaction_ids)))
            .order_by(Interaction.id)
        ).all()
        scores: dict[int, float] = {}
        lengths: dict[int, int] = {}
        priorities: dict[int, Priority] = {}
        unscored: list[dict[str, object]] = []
        for row in rows:
            priorities[row.id] = priority_of(row.metadata_)
            score = row.complexity
            if score is None:
                score = _isolated_complexity(row.id, row.content, row.metadata_)
                if score is not None:
                    unscored.append({"id": row.id, "complexity": score})
            scores[row.id] = float(score or 0.0)
            lengths[row.id] = len(row.content)
        if unscored:  # one executemany UPDATE by primary key for the batch
            session.execute(update(Interaction), unscored)
        state = budget_state(session, settings=settings)
        # Measured cross-check agreement replaces the static local capability once there are
        # enough samples (pipeline.quality.agreement).
        settings = with_measured_capability(session, settings)
    for iid in sorted(scores):
        task = RoutingTask(
            task_type=task_type,
            complexity=scores[iid],
            estimated_cost_usd=estimated_cost(settings, lengths[iid], settings.extract_input_chars),
            priority=priorities[iid],
            local_failed=local_failed,
        )
        decision: RouteDecision = route(task, state, settings)
        out.reasons[iid] = decision.reason
        if decision.claude:
            out.claude.append(iid)
            state = dataclasses.replace(
                state, reserved_usd=state.reserved_usd + task.estimated_cost_usd
            )
        else:
            out.local.append(iid)
    return out


def mark_analysis_pending(
    db: Database, settings: Settings, interaction_ids: Sequence[int]
) -> list[int]:
    """Of the given (extracted) interactions, mark those that need strategic analysis
    (:func:`pipeline.spend.routing.needs_strategic_analysis`) ``pending`` and return their ids.
    Ones already marked (a task that ran twice) are not returned again; one that cannot be
    scored is not analysed."""
    with db.session(ALL_PROJECTS) as session:
        rows = session.execute(
            select(Interaction.id, Interaction.kind, Interaction.content, Interaction.metadata_,
                   Interaction.complexity)
            .where(
                Interaction.id.in_(list(interaction_ids)),
                Interaction.status == InteractionStatus.EXTRACTED.value,
                Interaction.analysis_status.is_(None),
            )
            .order_by(Interaction.id)
        ).all()  # fmt: skip
        wanted: list[int] = []
        for row in rows:
            score = row.complexity
            if score is None:
                score = _isolated_complexity(row.id, row.content, row.metadata_)
            if score is not None and needs_strategic_analysis(row.kind, float(score), settings):
                wanted.append(row.id)
        if wanted:
            session.execute(
                update(Interaction)
                .where(Interaction.id.in_(wanted), Interaction.analysis_status.is_(None))
                .values(analysis_status=AnalysisStatus.PENDING.value, updated_at=func.now())
            )
    return wanted
