"""What a task does with a batch: place it, extract or analyse it on one engine, and hand on
what follows (embedding, strategic analysis, work for another engine) through the dispatcher.

The Celery tasks in ``workers/`` decode their arguments and call these functions; the functions
take every resource as an argument, so the same code runs in a worker, in process (``patterns
run`` without Redis) and in tests.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from pipeline.db.engine import Database
from pipeline.dispatch import Dispatcher
from pipeline.errors import MalformedInputError, PipelineError
from pipeline.extract.analysis import analyze_batch, mark_analysis_failed
from pipeline.extract.batch import MoreWork, extract_batch
from pipeline.extract.claim import claim_batch, claim_queued, release
from pipeline.extract.write import ExtractionBatchResult, mark_failed
from pipeline.llm.base import StructuredLLM
from pipeline.quality.crosscheck import pick_sample
from pipeline.settings import Settings
from pipeline.spend.placement import mark_analysis_pending, place
from pipeline.types import ClaudeMode, Strategy, TaskType

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ExtractSummary:
    """What one extract task did (counts)."""

    extracted: int
    failed: int
    patterns: int
    to_claude: int = 0
    deferred: int = 0
    #: Interactions the task held (its own, those it topped its batch up with at the claim and
    #: those it refilled retry rounds with).
    claimed: int = 0
    topped_up: int = 0
    refilled: int = 0
    #: Poison handling (pipeline.extract.claim): gone dead after too many crashed starts, and
    #: suspects set aside and published again one per task.
    dead: int = 0
    set_aside: int = 0


@dataclass(frozen=True)
class AnalysisSummary:
    """What one analysis task did (counts)."""

    done: int
    failed: int
    deferred: int = 0


def extract_routed(
    *,
    db: Database,
    engine: StructuredLLM,
    settings: Settings,
    dispatcher: Dispatcher,
    interaction_ids: Sequence[int],
    route: bool = True,
    claude_mode: ClaudeMode = ClaudeMode.SYNC,
    lease_owner: str | None = None,
) -> ExtractSummary:
    """The extract task: claim the batch under a lease held by ``lease_owner`` (the task's id),
    topped up with other queued interactions when it is short and ``route`` is true
    (:func:`pipeline.extract.claim.claim_batch`; not when the dispatcher is eager, where every
    batch is published full), then :func:`extract_claimed`, then release the lease. Under the
    same conditions, retry rounds are topped up with more queued interactions claimed under the
    same lease (:func:`pipeline.extract.claim.claim_queued`), released with the rest. Without
    ``lease_owner`` the given interactions are extracted as they are, unclaimed.

    Interactions whose worker was lost ``extract_max_starts`` times go ``dead`` at the claim;
    suspects beyond one per batch are published again first, one per task
    (:func:`publish_set_aside`).

    Raises:
        RetryableError / PermanentError: from the engine or the broker.
    """
    extract = functools.partial(
        extract_claimed, db=db, engine=engine, settings=settings, dispatcher=dispatcher,
        route=route, claude_mode=claude_mode,
    )  # fmt: skip
    if lease_owner is None:
        return extract(interaction_ids=interaction_ids)
    top_up = route and not dispatcher.eager
    claim = claim_batch(
        db,
        lease_owner,
        interaction_ids,
        batch_size=settings.extract_batch_size,
        linger_s=settings.extract_linger_s,
        lease_s=settings.extract_lease_s,
        top_up=top_up,
        max_starts=settings.extract_max_starts,
    )
    ids = claim.ids
    if claim.dead:
        log.warning("extract_poison_dead", interactions=claim.dead)
    publish_set_aside(dispatcher, claim.set_aside, route=route, claude_mode=claude_mode)
    poison = {"dead": len(claim.dead), "set_aside": len(claim.set_aside)}
    if not ids:
        return ExtractSummary(extracted=0, failed=0, patterns=0, **poison)
    owner = lease_owner  # str here, for the closure
    refilled: list[int] = []  # claimed for retry rounds to ride with, released below

    def claim_more(limit: int) -> list[int]:
        taken = claim_queued(db, owner, limit, settings.extract_lease_s)
        refilled.extend(taken)
        return taken

    try:
        summary = extract(interaction_ids=ids, claim_more=claim_more if top_up else None)
    finally:
        release(db, lease_owner, [*ids, *refilled])
    extra = sorted(set(ids) - {int(i) for i in interaction_ids})
    if extra:
        log.info("extract_batch_topped_up", own=len(ids) - len(extra), topped_up=len(extra))
    return dataclasses.replace(
        summary,
        claimed=len(ids) + len(refilled),
        topped_up=len(extra),
        refilled=len(refilled),
        **poison,
    )


def publish_set_aside(
    dispatcher: Dispatcher, ids: Sequence[int], *, route: bool, claude_mode: ClaudeMode
) -> None:
    """Publish an extract task for each suspect a claim set aside (one per task, so each one's
    next start is counted apart from the others). A publish that fails (broker down) is logged;
    the outbox sweeper publishes the interaction again later."""
    for iid in ids:
        try:
            dispatcher.extract([iid], route=route, claude_mode=claude_mode)
        except PipelineError as exc:
            log.warning("extract_set_aside_publish_failed", interaction=iid, error=str(exc))


def extract_claimed(
    *,
    db: Database,
    engine: StructuredLLM,
    settings: Settings,
    dispatcher: Dispatcher,
    interaction_ids: Sequence[int],
    route: bool = True,
    claude_mode: ClaudeMode = ClaudeMode.SYNC,
    claim_more: Callable[[int], Sequence[int]] | None = None,
) -> ExtractSummary:
    """Extract a batch: route it (``route=False``: it was routed already, extract all of it
    here), publish the Claude share, extract the rest on ``engine`` (the local model) in one
    call per attempt, then hand on what follows (:func:`after_extraction`).

    ``claim_more(n)``: claims up to ``n`` more queued interactions (ids) for retry rounds to
    ride with (:func:`pipeline.extract.batch.extract_batch`'s ``more``); they are routed (they
    never were, whatever ``route`` says), their Claude share published and counted in
    ``to_claude``, the rest extracted with the batch. The caller releases them.

    Under ``local_fallback``, interactions the local model failed go to Claude while the budget
    admits them (:func:`fallback_to_claude`).

    Raises:
        RetryableError / PermanentError: from the engine or the broker.
    """
    ids: Sequence[int] = list(interaction_ids)
    reasons: dict[int, str] | None = None
    claude_ids: list[int] = []
    if route:
        placement = place(db, settings, ids, TaskType.PATTERN_EXTRACTION)
        ids, claude_ids, reasons = placement.local, list(placement.claude), placement.reasons
        if claude_ids:
            dispatcher.claude(claude_ids, TaskType.PATTERN_EXTRACTION, claude_mode=claude_mode)
    fallback = settings.llm_strategy is Strategy.LOCAL_FALLBACK and route
    more = None
    if claim_more is not None:
        more = _routed(db, settings, dispatcher, claim_more, claude_mode, to_claude=claude_ids)
    result = extract_batch(
        db=db,
        engine=engine,
        settings=settings,
        interaction_ids=ids,
        route_reasons=reasons,
        keep_failures=fallback,
        more=more,
    )
    if fallback and result.deferred:
        fallback_to_claude(db, settings, dispatcher, result, claude_mode)
    after_extraction(db, settings, dispatcher, result, claude_mode)
    publish_cross_check(settings, dispatcher, result)
    return ExtractSummary(
        extracted=len(result.extracted),
        failed=len(result.failed),
        patterns=len(result.pattern_ids),
        to_claude=len(claude_ids),
    )


def _routed(
    db: Database,
    settings: Settings,
    dispatcher: Dispatcher,
    claim_more: Callable[[int], Sequence[int]],
    claude_mode: ClaudeMode,
    *,
    to_claude: list[int],
) -> MoreWork:
    """``claim_more`` as :func:`extract_batch`'s ``more``: what it claims (queued, never routed)
    is routed, its Claude share published and appended to ``to_claude``."""

    def more(limit: int) -> dict[int, str] | None:
        ids = list(claim_more(limit))
        if not ids:
            return None
        placement = place(db, settings, ids, TaskType.PATTERN_EXTRACTION)
        if placement.claude:
            dispatcher.claude(placement.claude, TaskType.PATTERN_EXTRACTION,
                              claude_mode=claude_mode)  # fmt: skip
            to_claude.extend(placement.claude)
        return {iid: placement.reasons[iid] for iid in placement.local}

    return more


def after_extraction(
    db: Database,
    settings: Settings,
    dispatcher: Dispatcher,
    result: ExtractionBatchResult,
    claude_mode: ClaudeMode,
) -> None:
    """Publish what follows an extraction: embedding of the new patterns, and strategic
    analysis (routed: Claude, or the local model) of the extracted interactions that need it.

    In ``batch`` mode the Claude share stays pending: ``patterns run --claude-batch`` sends
    every pending analysis of the run in one Message Batch once extraction is over.
    """
    if result.pattern_ids:
        dispatcher.embed(result.pattern_ids)
    # A trivial interaction (no patterns) has nothing for strategic analysis to look at.
    trivial = set(result.trivial)
    lessons = [iid for iid in result.extracted if iid not in trivial]
    if not lessons:
        return
    pending = mark_analysis_pending(db, settings, lessons)
    if not pending:
        return
    placement = place(db, settings, pending, TaskType.STRATEGIC_ANALYSIS)
    if placement.claude and claude_mode is not ClaudeMode.BATCH:
        dispatcher.claude(placement.claude, TaskType.STRATEGIC_ANALYSIS, claude_mode=claude_mode)
    if placement.local:
        dispatcher.analyze_local(placement.local, placement.reasons)


def publish_cross_check(
    settings: Settings, dispatcher: Dispatcher, result: ExtractionBatchResult
) -> None:
    """Publish the Claude cross-check of the sampled share of a local batch's extractions with
    patterns (:func:`pipeline.quality.crosscheck.pick_sample`: ``quality_sample_rate``, none
    without ``ANTHROPIC_API_KEY``). A publish that fails is logged: the check is a sample, and
    extraction goes on without it."""
    trivial = set(result.trivial)
    sample = pick_sample([i for i in result.extracted if i not in trivial], settings)
    if not sample:
        return
    try:
        dispatcher.cross_check(sample)
    except PipelineError as exc:
        log.warning("cross_check_publish_failed", interactions=sample, error=str(exc))


def fallback_to_claude(
    db: Database,
    settings: Settings,
    dispatcher: Dispatcher,
    result: ExtractionBatchResult,
    claude_mode: ClaudeMode,
) -> None:
    """``local_fallback``: what the local model failed goes to Claude if the budget admits it;
    the rest fails with the local model's reason."""
    placement = place(
        db, settings, list(result.deferred), TaskType.PATTERN_EXTRACTION, local_failed=True
    )
    if placement.claude:
        dispatcher.claude(placement.claude, TaskType.PATTERN_EXTRACTION, claude_mode=claude_mode)
    mark_failed(
        db,
        {
            iid: f"{result.deferred[iid]}; no Claude fallback: {placement.reasons[iid]}"
            for iid in placement.local
        },
    )


def run_on_claude(
    *,
    db: Database,
    engine: StructuredLLM,
    settings: Settings,
    dispatcher: Dispatcher,
    interaction_ids: Sequence[int],
    task_type: TaskType,
    claude_mode: ClaudeMode = ClaudeMode.SYNC,
) -> ExtractSummary | AnalysisSummary:
    """The Claude task: ``task_type`` (pattern extraction or strategic analysis) over the
    interactions on a Claude engine. What Claude defers (the budget cannot admit it, or Claude
    stays unavailable through its retries) goes back to the local queue, so no work fails
    because the budget ran out.

    Raises:
        MalformedInputError: a task type that has no Claude task.
        RetryableError / PermanentError: from the engine or the broker.
    """
    ids = list(interaction_ids)
    if task_type is TaskType.PATTERN_EXTRACTION:
        result = extract_batch(db=db, engine=engine, settings=settings, interaction_ids=ids)
        if result.deferred:
            dispatcher.extract(sorted(result.deferred), route=False, claude_mode=claude_mode)
        after_extraction(db, settings, dispatcher, result, claude_mode)
        return ExtractSummary(
            extracted=len(result.extracted),
            failed=len(result.failed),
            patterns=len(result.pattern_ids),
            deferred=len(result.deferred),
        )
    if task_type is TaskType.STRATEGIC_ANALYSIS:
        analysis = analyze_batch(db=db, engine=engine, settings=settings, interaction_ids=ids)
        if analysis.deferred:
            dispatcher.analyze_local(
                sorted(analysis.deferred),
                {k: f"deferred by Claude: {v}" for k, v in analysis.deferred.items()},
            )
        return AnalysisSummary(
            done=len(analysis.done), failed=len(analysis.failed), deferred=len(analysis.deferred)
        )
    raise MalformedInputError(f"task type {task_type.value!r} has no Claude task")


def analyze_locally(
    *,
    db: Database,
    engine: StructuredLLM,
    settings: Settings,
    interaction_ids: Sequence[int],
    route_reasons: Mapping[int, str] | None = None,
) -> AnalysisSummary:
    """The local analysis task: strategic analysis on the local model (routed here, or deferred
    by Claude). The local engine never defers; if it did, nothing else could take the work, so
    such analyses fail with the reason."""
    result = analyze_batch(
        db=db,
        engine=engine,
        settings=settings,
        interaction_ids=list(interaction_ids),
        route_reasons=route_reasons or None,
    )
    if result.deferred:
        mark_analysis_failed(db, result.deferred)
    return AnalysisSummary(done=len(result.done), failed=len(result.failed))
