"""Extract tasks: route each interaction, extract the local share with vLLM, hand the rest to
Claude, then queue embedding and strategic analysis.

``claude_mode`` travels with the work: ``sync`` (Messages API) or ``batch`` (Message Batches API,
``patterns run --claude-batch``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pipeline.analysis import analyze_batch, mark_analysis_failed
from pipeline.extraction import ExtractionBatchResult, extract_batch, mark_failed
from pipeline.placement import mark_analysis_pending, place
from pipeline.settings import Strategy, TaskType
from workers import resources
from workers.app import RETRY_POLICY, app


def after_extraction(result: ExtractionBatchResult, claude_mode: str) -> None:
    """Queue what follows an extraction: embedding of the new patterns, and strategic analysis
    (routed: Claude, or the local model) of the extracted interactions that need it."""
    if result.pattern_ids:
        from workers.embed import embed_patterns_task

        embed_patterns_task.delay([str(p) for p in result.pattern_ids])
    if not result.extracted:
        return
    db, settings = resources.db(), resources.settings()
    pending = mark_analysis_pending(db, settings, result.extracted)
    if not pending:
        return
    placement = place(db, settings, pending, TaskType.STRATEGIC_ANALYSIS)
    if placement.claude and claude_mode != "batch":
        from workers.claude import claude_batch_task

        claude_batch_task.delay(placement.claude, TaskType.STRATEGIC_ANALYSIS.value, claude_mode)
    # In batch mode the Claude share stays pending: `patterns run --claude-batch` sends every
    # pending analysis of the run in one Message Batch once extraction is over.
    if placement.local:
        analyze_local_task.delay(placement.local, placement.reasons)


def _fallback(result: ExtractionBatchResult, claude_mode: str) -> None:
    """``local_fallback``: what the local model failed goes to Claude if the budget admits it;
    the rest fails with the local model's reason."""
    db, settings = resources.db(), resources.settings()
    placement = place(
        db, settings, list(result.deferred), TaskType.PATTERN_EXTRACTION, local_failed=True
    )
    if placement.claude:
        from workers.claude import claude_batch_task

        claude_batch_task.delay(placement.claude, TaskType.PATTERN_EXTRACTION.value, claude_mode)
    mark_failed(
        db,
        {
            iid: f"{result.deferred[iid]}; no Claude fallback: {placement.reasons[iid]}"
            for iid in placement.local
        },
    )


@app.task(
    name="patterns.extract_batch",
    **RETRY_POLICY,
)
def extract_batch_task(
    interaction_ids: list[int], route: bool = True, claude_mode: str = "sync"
) -> dict[str, Any]:
    """Route a batch (``route=False``: it was routed already, extract all of it locally),
    extract the local share in one vLLM call per attempt, queue the Claude share on the
    ``claude`` queue, and queue what follows."""
    db, settings = resources.db(), resources.settings()
    ids: Sequence[int] = [int(i) for i in interaction_ids]
    reasons: dict[int, str] | None = None
    claude_ids: list[int] = []
    if route:
        placement = place(db, settings, ids, TaskType.PATTERN_EXTRACTION)
        ids, claude_ids, reasons = placement.local, placement.claude, placement.reasons
        if claude_ids:
            from workers.claude import claude_batch_task

            claude_batch_task.delay(claude_ids, TaskType.PATTERN_EXTRACTION.value, claude_mode)
    fallback = settings.llm_strategy is Strategy.LOCAL_FALLBACK and route
    result = extract_batch(
        db=db,
        engine=resources.engine(),
        settings=settings,
        interaction_ids=ids,
        route_reasons=reasons,
        keep_failures=fallback,
    )
    if fallback and result.deferred:
        _fallback(result, claude_mode)
    after_extraction(result, claude_mode)
    return {
        "extracted": len(result.extracted),
        "failed": len(result.failed),
        "patterns": len(result.pattern_ids),
        "to_claude": len(claude_ids),
    }


@app.task(
    name="patterns.analyze_local",
    **RETRY_POLICY,
)
def analyze_local_task(
    interaction_ids: list[int], route_reasons: dict[str, str] | None = None
) -> dict[str, Any]:
    """Strategic analysis on the local model (routed here, or deferred by Claude)."""
    db = resources.db()
    reasons = {int(k): v for k, v in (route_reasons or {}).items()}
    result = analyze_batch(
        db=db,
        engine=resources.engine(),
        settings=resources.settings(),
        interaction_ids=[int(i) for i in interaction_ids],
        route_reasons=reasons or None,
    )
    if result.deferred:
        # The local engine never defers; if it did, nothing else could take the work.
        mark_analysis_failed(db, result.deferred)
    return {"done": len(result.done), "failed": len(result.failed)}
