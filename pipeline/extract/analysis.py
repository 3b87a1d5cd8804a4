"""Strategic analysis of complex pull requests and issues: recommendations linked to patterns.

An interaction marked ``analysis_status = 'pending'`` (:func:`pipeline.spend.placement.
mark_analysis_pending`) is analysed by whichever engine it was routed to (Claude, or the local
model when the budget cannot admit it), with its text and the titles of the patterns extracted
from it. The answer (:class:`StrategicAnalysis`, structured output) becomes rows of
``recommendations``, each linked to the patterns whose titles it names. Like extraction: one
batched engine call per attempt, one retry on a bad output, then ``failed`` with the reason;
writes under a row lock only while the analysis is still pending, so a task that runs twice
stores one set of recommendations. Like extraction, a request the exact response cache
(:mod:`pipeline.extract.cache`) can answer reaches no engine.
"""

from __future__ import annotations

import difflib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import structlog
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Table, bindparam, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, LLMCall, Pattern, Recommendation
from pipeline.db.status import AnalysisStatus
from pipeline.extract.attempts import Attempts, RetryDecision, generate_with_retries, one_retry
from pipeline.extract.cache import CacheKey, Versions, lookup_outputs, remember
from pipeline.extract.schemas import validate_output
from pipeline.llm.base import GenerationRequest, StructuredLLM
from pipeline.settings import Settings
from pipeline.spend.routing import priority_of
from pipeline.text import normalize_title
from pipeline.types import TaskType

log = structlog.get_logger(__name__)

#: The interactions table, for Core statements (executemany with our own WHERE).
_INTERACTIONS = cast(Table, Interaction.__table__)

TASK_TYPE = TaskType.STRATEGIC_ANALYSIS
MAX_ATTEMPTS = 2
#: Bump when the prompt's wording or the answer's checks change: part of the response cache key.
PROMPT_VERSION = "1"
SCHEMA_VERSION = "1"
CACHE_VERSIONS = Versions(TASK_TYPE, PROMPT_VERSION, SCHEMA_VERSION)


class RecommendationOut(BaseModel):
    """One recommendation for the project, naming the patterns it concerns by title."""

    model_config = ConfigDict(extra="forbid")
    title: str = Field(min_length=3, max_length=80)
    body: str = Field(min_length=1, max_length=400)
    priority: Literal["low", "medium", "high"]
    confidence: float = Field(ge=0, le=1)
    patterns: list[str] = Field(default_factory=list, max_length=3)


class StrategicAnalysis(BaseModel):
    """The answer for one interaction: 1-3 recommendations."""

    model_config = ConfigDict(extra="forbid")
    recommendations: list[RecommendationOut] = Field(min_length=1, max_length=3)


SYSTEM = (
    "You advise the maintainers of a software project. Given one pull request or issue and the "
    "patterns already extracted from it, recommend 1 to 3 concrete next steps (process, design, "
    "testing, risk). Reply with JSON only. For each recommendation give a short title, a body of "
    "at most three sentences, a priority (low, medium or high), a confidence between 0 and 1, "
    "and the exact titles of the listed patterns it concerns."
)


def analysis_messages(
    content: str, pattern_titles: Sequence[str], *, max_chars: int
) -> list[dict[str, str]]:
    """Chat messages for one interaction (text cut to ``max_chars``, the cut marked)."""
    if len(content) > max_chars:
        content = content[:max_chars].rstrip() + "\n[... truncated]"
    listed = "\n".join(f"- {t}" for t in pattern_titles) or "- (none)"
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{content}\n\nPatterns extracted from it:\n{listed}"},
    ]


def link_patterns(
    names: Sequence[str], patterns: Mapping[str, uuid.UUID], cutoff: float
) -> list[uuid.UUID]:
    """Pattern ids for the titles a recommendation names: exact normalised title first, then the
    closest title at least ``cutoff`` similar (difflib ratio). Unknown names are dropped."""
    out: list[uuid.UUID] = []
    for name in names:
        key = normalize_title(name)
        pid = patterns.get(key)
        if pid is None:
            close = difflib.get_close_matches(key, list(patterns), n=1, cutoff=cutoff)
            pid = patterns[close[0]] if close else None
        if pid is not None and pid not in out:
            out.append(pid)
    return out


@dataclass
class AnalysisBatchResult:
    """What one :func:`analyze_batch` call did; ``deferred`` (id → reason) still wait."""

    done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    deferred: dict[int, str] = field(default_factory=dict)
    recommendations: int = 0
    llm_calls: int = 0
    cache_hits: int = 0


@dataclass(frozen=True)
class _Pending:
    """The pending analyses of a batch: their rows, and per interaction its patterns' titles
    (normalised title → id, and as displayed)."""

    rows: dict[int, Any]
    titles: dict[int, dict[str, uuid.UUID]]
    display: dict[int, list[str]]


def analyze_batch(
    *,
    db: Database,
    engine: StructuredLLM,
    settings: Settings,
    interaction_ids: Sequence[int],
    route_reasons: Mapping[int, str] | None = None,
) -> AnalysisBatchResult:
    """Analyse the given interactions whose analysis is still ``pending`` and store their
    recommendations (see the module docstring).

    Raises:
        RetryableError / PermanentError: from the engine, when nothing could be generated.
    """
    out = AnalysisBatchResult()
    pending = _load_pending(db, interaction_ids)
    if not pending.rows:
        return out
    attempts, keys = _generate(db, engine, settings, pending, route_reasons)
    out.llm_calls, out.cache_hits = attempts.model_calls, len(attempts.hits)
    out.deferred = dict(attempts.deferred)
    with db.session(ALL_PROJECTS) as session:
        session.execute(insert(LLMCall), attempts.calls)
        remember(session, keys, attempts.accepted)
        _store(session, engine, settings, pending, attempts, out)
    log.info(
        "analyze_batch_done",
        provider=engine.provider,
        batch=len(pending.rows),
        done=len(out.done),
        failed=len(out.failed),
        deferred=len(out.deferred),
        recommendations=out.recommendations,
        cache_hits=out.cache_hits,
    )
    return out


def _load_pending(db: Database, interaction_ids: Sequence[int]) -> _Pending:
    with db.session(ALL_PROJECTS) as session:
        rows = session.execute(
            select(
                Interaction.id, Interaction.project_id, Interaction.content, Interaction.metadata_
            )
            .where(
                Interaction.id.in_(list(interaction_ids)),
                Interaction.analysis_status == AnalysisStatus.PENDING,
            )
            .order_by(Interaction.id)
        ).all()
        titles: dict[int, dict[str, uuid.UUID]] = {r.id: {} for r in rows}
        display: dict[int, list[str]] = {r.id: [] for r in rows}
        for iid, pid, title in session.execute(
            select(Pattern.source_interaction_id, Pattern.id, Pattern.title)
            .where(Pattern.source_interaction_id.in_(list(titles)))
            # Titles in a fixed order (one write shares created_at; ids are random), so the same
            # patterns make the same prompt and the response cache can answer it.
            .order_by(Pattern.created_at, Pattern.title, Pattern.id)
        ).all():
            if iid is None:
                continue
            titles[iid].setdefault(normalize_title(title), pid)
            display[iid].append(title)
    return _Pending({r.id: r for r in rows}, titles, display)


def _generate(
    db: Database,
    engine: StructuredLLM,
    settings: Settings,
    pending: _Pending,
    route_reasons: Mapping[int, str] | None,
) -> tuple[Attempts[StrategicAnalysis], dict[int, CacheKey]]:
    """The response cache's answers first, then one batched engine call per attempt over the
    rest. Returns the attempts and the analyses' cache keys (empty with the cache off)."""
    schema = StrategicAnalysis.model_json_schema()

    def request(iid: int, retry: RetryDecision | None) -> GenerationRequest:
        row = pending.rows[iid]
        return GenerationRequest(
            messages=analysis_messages(
                row.content, pending.display[iid], max_chars=settings.extract_input_chars
            ),
            json_schema=schema,
            max_tokens=retry.max_tokens if retry else settings.claude_max_tokens,
            temperature=retry.temperature if retry else 0.0,
            seed=settings.seed + iid,
            task_type=TASK_TYPE,
            interaction_id=iid,
            priority=priority_of(row.metadata_),
        )

    keys, cached = lookup_outputs(
        db,
        {iid: request(iid, None) for iid in pending.rows},
        {iid: row.project_id for iid, row in pending.rows.items()},
        model=engine.model_name,
        versions=CACHE_VERSIONS,
        enabled=settings.response_cache,
    )
    attempts = generate_with_retries(
        engine,
        list(pending.rows),
        request=request,
        parse=lambda text, finish: validate_output(StrategicAnalysis, text, finish),
        decide=lambda attempt, exc: one_retry(
            attempt,
            exc,
            max_tokens=settings.claude_max_tokens,
            temperature=settings.extract_retry_temperature,
            max_attempts=MAX_ATTEMPTS,
        ),
        task_type=TASK_TYPE,
        route_reasons=route_reasons,
        cached=cached,
    )
    return attempts, keys


def _store(
    session: Session,
    engine: StructuredLLM,
    settings: Settings,
    pending: _Pending,
    attempts: Attempts[StrategicAnalysis],
    out: AnalysisBatchResult,
) -> None:
    """Write the decided analyses that are still pending: recommendations and ``done``, or
    ``failed`` with the reason."""
    decided = [iid for iid in pending.rows if iid not in attempts.deferred]
    # One lock for the batch: only analyses still pending are written (a task that ran
    # twice finds them done).
    still_pending = set(
        session.scalars(
            select(Interaction.id)
            .where(
                Interaction.id.in_(decided),
                Interaction.analysis_status == AnalysisStatus.PENDING,
            )
            .order_by(Interaction.id)
            .with_for_update()
        ).all()
    )
    recommendations: list[dict[str, object]] = []
    for iid in decided:
        if iid not in still_pending:
            continue
        result = attempts.results.get(iid)
        if result is None:
            out.failed[iid] = attempts.failed.get(iid, "no output")
            continue
        out.done.append(iid)
        out.recommendations += len(result.recommendations)
        recommendations.extend(
            {
                "project_id": pending.rows[iid].project_id,
                "interaction_id": iid,
                "title": rec.title,
                "body": rec.body,
                "priority": rec.priority,
                "confidence": rec.confidence,
                "pattern_ids": link_patterns(
                    rec.patterns, pending.titles[iid], settings.title_match_cutoff
                ),
                "model": engine.model_name,
                "provider": engine.provider,
            }
            for rec in result.recommendations
        )
    if recommendations:
        session.execute(insert(Recommendation), recommendations)
    if out.done:
        session.execute(
            update(Interaction)
            .where(Interaction.id.in_(out.done))
            .values(
                analysis_status=AnalysisStatus.DONE.value,
                analysis_error=None,
                updated_at=func.now(),
            )
        )
    _mark_failed(session, out.failed)


def _mark_failed(session: Session, failures: Mapping[int, str]) -> None:
    """Mark the given analyses that are still pending ``failed`` with their reasons, in one
    statement (executemany)."""
    if not failures:
        return
    session.execute(
        # Core table: an executemany UPDATE with our own WHERE (the ORM form would be a bulk
        # update by primary key).
        update(_INTERACTIONS)
        .where(
            _INTERACTIONS.c.id == bindparam("iid"),
            _INTERACTIONS.c.analysis_status == AnalysisStatus.PENDING,
        )
        .values(analysis_status=AnalysisStatus.FAILED.value, analysis_error=bindparam("reason"),
                updated_at=func.now()),
        [{"iid": iid, "reason": reason} for iid, reason in failures.items()],
    )  # fmt: skip


def mark_analysis_failed(db: Database, failures: Mapping[int, str]) -> None:
    """Mark pending analyses ``failed`` with their reasons (id → reason)."""
    with db.session(ALL_PROJECTS) as session:
        _mark_failed(session, failures)


def stale_analyses(db: Database, *, older_than_s: float, limit: int) -> list[int]:
    """Ids of analyses still ``pending`` whose interaction was last touched more than
    ``older_than_s`` seconds ago (their task was lost), oldest first, at most ``limit``."""
    with db.session(ALL_PROJECTS) as session:
        return list(
            session.scalars(
                select(Interaction.id)
                .where(
                    Interaction.analysis_status == AnalysisStatus.PENDING,
                    Interaction.updated_at
                    < func.now() - func.make_interval(0, 0, 0, 0, 0, 0, older_than_s),
                )
                .order_by(Interaction.updated_at)
                .limit(limit)
            ).all()
        )
