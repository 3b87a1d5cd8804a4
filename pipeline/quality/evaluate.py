"""Running the extractor over labelled deliveries for ``patterns eval``: the same trivial rules,
requests, parsing and retry as :func:`pipeline.extract.batch.extract_batch` (one batched engine
call per attempt), without the database, so the figures measure the prompt, the schema and the model
and nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.extract.attempts import generate_with_retries
from pipeline.extract.batch import TASK_TYPE, extraction_request, parse_output, retry_decision
from pipeline.extract.schemas import ExtractionResult
from pipeline.extract.trivial import trivial_reason
from pipeline.llm.base import StructuredLLM
from pipeline.quality.gold import Labelled, LabelledPattern, LabelledRelationship
from pipeline.settings import Settings


def as_labelled(delivery: str, result: ExtractionResult | None) -> Labelled:
    """An extraction result in the gold's format (``None``: the extraction failed)."""
    if result is None:
        return Labelled(delivery=delivery, failed=True)
    trivial = result.trivial or not result.patterns
    return Labelled(
        delivery=delivery,
        trivial=trivial,
        patterns=[] if trivial else [
            LabelledPattern(type=p.type, title=p.title, description=p.description,
                            evidence=p.evidence)
            for p in result.patterns
        ],
        relationships=[] if trivial else [
            LabelledRelationship(source=r.source, target=r.target, type=r.type)
            for r in result.relationships
        ],
    )  # fmt: skip


def predict(
    engine: StructuredLLM, settings: Settings, inputs: Mapping[str, str]
) -> dict[str, Labelled]:
    """Extract every input (delivery id → normalised text) on ``engine``: one batched call per
    attempt, a bad output retried once (:func:`pipeline.extract.batch.retry_decision`).

    Returns delivery id → prediction in the gold's format (``failed`` where no valid output
    came). Raises what the engine raises when nothing could be generated.
    """
    deliveries = sorted(inputs)
    ruled = {i for i, d in enumerate(deliveries) if trivial_reason(inputs[d]) is not None}
    attempts = generate_with_retries(
        engine,
        [i for i in range(len(deliveries)) if i not in ruled],
        request=lambda key, retry: extraction_request(
            inputs[deliveries[key]], key, settings, retry
        ),
        parse=parse_output,
        decide=lambda attempt, exc: retry_decision(attempt, exc, settings),
        task_type=TASK_TYPE,
    )
    for i in ruled:
        attempts.results[i] = ExtractionResult(trivial=True)
    return {d: as_labelled(d, attempts.results.get(i)) for i, d in enumerate(deliveries)}
