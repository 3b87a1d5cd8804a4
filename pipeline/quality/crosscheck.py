"""The Claude cross-check: a sampled share of local extractions is extracted again by Claude,
under the daily budget, and each local pattern is judged by whether Claude gave a matching one
(the matching of ``patterns eval``: :func:`pipeline.quality.metrics.match_pairs` on MiniLM
embeddings of title and description, threshold :data:`~pipeline.quality.metrics.MATCH_THRESHOLD`).

Each judged local pattern gains a ``pattern_validations`` row of type ``cross_check``:
``confirmed`` (Claude agrees) or ``uncertain`` (Claude gave no matching pattern: a second
model's silence is not counted as evidence against it, so it is not a contradiction), its
``confidence`` the cosine similarity of the closest pattern of Claude's, and ``evidence``
``{"task_type", "similarity", "claude_title", "claude_trivial", "model"}``. The rates over a
window become routing's local capability (:mod:`pipeline.quality.agreement`).

Budget: every Claude call reserves its worst case against the day's budget before it is sent
(:class:`pipeline.llm.claude.ClaudeEngine`); a call the budget cannot admit comes back
``deferred`` and that interaction is simply not cross-checked (listed in ``deferred``): the
check never spends past the budget and never fails extraction.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import structlog
from sqlalchemy import exists, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, LLMCall, Pattern, PatternValidation
from pipeline.db.status import (
    ExtractionMethod,
    InteractionStatus,
    ValidationResult,
    ValidationType,
)
from pipeline.extract.attempts import generate_with_retries
from pipeline.extract.batch import TASK_TYPE, extraction_request, parse_output, retry_decision
from pipeline.extract.schemas import ExtractionResult
from pipeline.llm.base import StructuredLLM
from pipeline.ops.quality import read_cross_checks
from pipeline.quality.metrics import MATCH_THRESHOLD, match_pairs
from pipeline.settings import Settings
from pipeline.store.embedder import Embedder, pattern_text
from pipeline.store.events import NewEvent, lock_projects, record
from pipeline.store.merge import refresh, status_events

log = structlog.get_logger(__name__)

#: ``llm_calls.route_reason`` of the cross-check's Claude calls.
ROUTE_REASON = "quality cross-check"


def sampled(interaction_id: int, rate: float) -> bool:
    """Whether an interaction is in the cross-check sample: the first 8 bytes of
    SHA-256(``"cross-check:<id>"``) as a fraction of 2**64 are under ``rate``, so the same
    interactions are picked however often (and by whichever worker) the question is asked."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"cross-check:{interaction_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def pick_sample(interaction_ids: Sequence[int], settings: Settings) -> list[int]:
    """The interactions of ``interaction_ids`` in the sample (``quality_sample_rate``); none
    without ``ANTHROPIC_API_KEY``."""
    if settings.anthropic_api_key is None:
        return []
    return [iid for iid in interaction_ids if sampled(iid, settings.quality_sample_rate)]


@dataclass
class CrossCheckResult:
    """What one :func:`cross_check_batch` did: interactions ``checked``; ``deferred`` (id →
    reason: the budget or Claude's availability) and ``failed`` (id → reason: no valid answer)
    were not; patterns ``confirmed`` and ``uncertain``; Claude ``llm_calls`` made."""

    checked: list[int] = field(default_factory=list)
    deferred: dict[int, str] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    confirmed: int = 0
    uncertain: int = 0
    llm_calls: int = 0


@dataclass(frozen=True)
class _Local:
    """One interaction to check: its project, text and local patterns (id, title, text)."""

    project_id: uuid.UUID
    content: str
    patterns: list[tuple[uuid.UUID, str, str]]


def _unchecked() -> Any:
    """SQL: the pattern has no cross-check yet."""
    return ~exists().where(
        PatternValidation.pattern_id == Pattern.id,
        PatternValidation.validation_type == ValidationType.CROSS_CHECK.value,
    )


def _load(db: Database, interaction_ids: Sequence[int]) -> dict[int, _Local]:
    """Extracted, non-trivial interactions of ``interaction_ids`` with local patterns not yet
    cross-checked (a task that runs twice checks nothing twice)."""
    out: dict[int, _Local] = {}
    with db.session(ALL_PROJECTS) as session:
        rows = session.execute(
            select(Interaction.id, Interaction.project_id, Interaction.content, Pattern.id,
                   Pattern.title, Pattern.content)
            .join(Pattern, Pattern.source_interaction_id == Interaction.id)
            .where(
                Interaction.id.in_(list(interaction_ids)),
                Interaction.status == InteractionStatus.EXTRACTED.value,
                Interaction.trivial.is_(False),
                Pattern.extraction_method == ExtractionMethod.LOCAL_LLM.value,
                _unchecked(),
            )
            .order_by(Interaction.id, Pattern.created_at, Pattern.title)
        ).all()  # fmt: skip
    for iid, project_id, content, pid, title, body in cast(Sequence[Any], rows):
        local = out.setdefault(iid, _Local(project_id, content, []))
        local.patterns.append((pid, title, pattern_text(title, body or {})))
    return out


def _judge(
    local: Mapping[int, _Local], answers: Mapping[int, ExtractionResult], embedder: Embedder
) -> dict[int, list[tuple[uuid.UUID, float, str | None]]]:
    """Per interaction, each local pattern with the similarity of its matched Claude pattern
    and that pattern's title, or (no match) the best similarity and ``None``; one encode."""
    texts: list[str] = []
    for iid, answer in answers.items():
        texts += [text for _, _, text in local[iid].patterns]
        texts += [pattern_text(p.title, {"description": p.description}) for p in answer.patterns]
    vectors = embedder.encode(texts) if texts else None
    out: dict[int, list[tuple[uuid.UUID, float, str | None]]] = {}
    at = 0
    for iid, answer in answers.items():
        mine, theirs = local[iid].patterns, answer.patterns
        assert vectors is not None
        a = vectors[at : at + len(mine)]
        b = vectors[at + len(mine) : at + len(mine) + len(theirs)]
        at += len(mine) + len(theirs)
        similarity = a @ b.T if len(theirs) else None
        pairs = (
            {g: (p, s) for g, p, s in match_pairs(similarity, MATCH_THRESHOLD)}
            if similarity is not None
            else {}
        )
        judged: list[tuple[uuid.UUID, float, str | None]] = []
        for i, (pid, _, _) in enumerate(mine):
            if i in pairs:
                judged.append((pid, pairs[i][1], theirs[pairs[i][0]].title))
            else:
                best = float(similarity[i].max()) if similarity is not None else 0.0
                judged.append((pid, max(best, 0.0), None))
        out[iid] = judged
    return out


def cross_check_batch(
    *,
    db: Database,
    engine: StructuredLLM,
    embedder: Embedder,
    settings: Settings,
    interaction_ids: Sequence[int],
) -> CrossCheckResult:
    """Cross-check the local extractions of ``interaction_ids`` on ``engine`` (Claude): one
    batched call per attempt with the extraction's own requests, a bad answer retried once,
    then the judgement stored (module docstring). Interactions with nothing left to check
    (trivial, no local patterns, checked already) are skipped.

    Raises:
        RetryableError / PermanentError: from the engine, when nothing could be generated.
    """
    out = CrossCheckResult()
    local = _load(db, interaction_ids)
    if not local:
        return out
    attempts = generate_with_retries(
        engine,
        list(local),
        request=lambda iid, retry: extraction_request(local[iid].content, iid, settings, retry),
        parse=parse_output,
        decide=lambda attempt, exc: retry_decision(attempt, exc, settings),
        task_type=TASK_TYPE,
        route_reasons=dict.fromkeys(local, ROUTE_REASON),
    )
    out.llm_calls, out.deferred, out.failed = (
        attempts.model_calls,
        attempts.deferred,
        attempts.failed,
    )
    judged = _judge(local, attempts.results, embedder)
    with db.session(ALL_PROJECTS) as session:
        if attempts.calls:
            session.execute(insert(LLMCall), attempts.calls)
        lock_projects(session, {local[iid].project_id for iid in judged})
        for iid, patterns in judged.items():
            _store(session, engine, settings, iid, local[iid], patterns,
                   attempts.results[iid], out)  # fmt: skip
    if out.checked:  # the alert's log line, when agreement in use falls under the threshold
        with db.session(ALL_PROJECTS) as session:
            read_cross_checks(session, settings)
    log.info(
        "cross_check_done", checked=len(out.checked), deferred=len(out.deferred),
        failed=len(out.failed), confirmed=out.confirmed, uncertain=out.uncertain,
    )  # fmt: skip
    return out


def _store(
    session: Session,
    engine: StructuredLLM,
    settings: Settings,
    iid: int,
    local: _Local,
    patterns: Sequence[tuple[uuid.UUID, float, str | None]],
    answer: ExtractionResult,
    out: CrossCheckResult,
) -> None:
    """Write one interaction's cross-check validations (patterns another task checked
    meanwhile are left alone: the rows are locked and looked at again) and refresh the
    confirmed patterns' counts and status."""
    open_ids = set(
        session.scalars(
            select(Pattern.id)
            .where(Pattern.id.in_([pid for pid, _, _ in patterns]), _unchecked())
            .with_for_update()
        ).all()
    )
    events: list[NewEvent] = []
    for pid, similarity, claude_title in patterns:
        if pid not in open_ids:
            continue
        agreed = claude_title is not None
        result = ValidationResult.CONFIRMED if agreed else ValidationResult.UNCERTAIN
        session.add(
            PatternValidation(
                project_id=local.project_id, pattern_id=pid,
                validator=f"cross-check:{engine.model_name}",
                validation_type=ValidationType.CROSS_CHECK.value, result=result.value,
                confidence=round(min(max(similarity, 0.0), 1.0), 4), interaction_id=iid,
                evidence={"task_type": TASK_TYPE.value, "similarity": round(similarity, 4),
                          "claude_title": claude_title, "claude_trivial": answer.trivial,
                          "model": engine.model_name},
            )
        )  # fmt: skip
        session.flush()
        if agreed:
            out.confirmed += 1
            before, after = refresh(session, pid, settings)
            events += status_events(local.project_id, pid, before, after)
        else:
            out.uncertain += 1
    record(session, events)
    out.checked.append(iid)
