"""Extraction and embedding with the real vLLM engine (SmolLM2) and the real MiniLM embedder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, LLMCall, Pattern, PatternRelationship, PatternValidation
from pipeline.extract.batch import extract_batch
from pipeline.extract.schemas import ExtractionResult, extraction_json_schema
from pipeline.intake.normalize import NormalizedInteraction
from pipeline.intake.records import read_records
from pipeline.intake.store import store
from pipeline.llm.base import GenerationRequest
from pipeline.settings import Settings
from pipeline.store.embed import embed_patterns

pytestmark = pytest.mark.integration


def _ingest(db: Database, records: list) -> list[int]:  # type: ignore[type-arg]
    with db.session(ALL_PROJECTS) as s:
        return store(s, records).interaction_ids


def _count(db: Database, model: type) -> int:
    with db.session(ALL_PROJECTS) as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_one_call_answers_many_prompts_in_schema(vllm_engine: object) -> None:
    requests = [
        GenerationRequest(
            messages=[{"role": "user", "content": f"Pull request #{i}: fix typo in docs"}],
            json_schema=extraction_json_schema(),
            max_tokens=512,
        )
        for i in range(4)
    ]
    outputs = vllm_engine.generate(requests)  # type: ignore[attr-defined]
    assert len(outputs) == 4
    for out in outputs:
        assert out.tokens_in > 0 and out.tokens_out > 0
        if out.finish_reason == "stop":  # constrained output parses as the schema
            ExtractionResult.model_validate_json(out.text)


def test_extract_batch_stores_patterns_and_is_idempotent(
    db: Database, vllm_engine: object, model_settings: Settings, shared_corpus: Path
) -> None:
    ids = _ingest(db, list(read_records([shared_corpus], limit=8)))
    result = extract_batch(db=db, engine=vllm_engine, settings=model_settings, interaction_ids=ids)  # type: ignore[arg-type]
    assert len(result.extracted) + len(result.failed) == 8
    assert len(result.extracted) >= 6  # the same model and prompt fail well under 10% at scale
    with db.session(ALL_PROJECTS) as s:
        statuses = dict(s.execute(select(Interaction.id, Interaction.status)).all())
        assert set(statuses.values()) <= {"extracted", "failed"}
        per_interaction = dict(
            s.execute(
                select(Pattern.source_interaction_id, func.count()).group_by(
                    Pattern.source_interaction_id
                )
            ).all()
        )
        for iid in result.extracted:  # a lesson has patterns; a trivial answer has none
            assert (per_interaction.get(iid, 0) >= 1) is (iid not in result.trivial)
        for iid, reason in result.failed.items():
            assert s.get(Interaction, iid).last_error == reason  # type: ignore[union-attr]
        calls = s.execute(select(LLMCall.batch_size, LLMCall.attempt, LLMCall.outcome)).all()
    first_attempts = [c for c in calls if c.attempt == 1]
    assert len(first_attempts) == 8 and all(c.batch_size == 8 for c in first_attempts)
    assert result.llm_calls == len(calls)
    before = (_count(db, Pattern), _count(db, PatternRelationship), _count(db, LLMCall))
    again = extract_batch(db=db, engine=vllm_engine, settings=model_settings, interaction_ids=ids)  # type: ignore[arg-type]
    assert again.llm_calls == 0 and not again.pattern_ids
    assert (_count(db, Pattern), _count(db, PatternRelationship), _count(db, LLMCall)) == before


def test_truncated_output_is_retried_then_failed_with_reason(
    db: Database, vllm_engine: object, model_settings: Settings, shared_corpus: Path
) -> None:
    ids = _ingest(db, list(read_records([shared_corpus], limit=3)))
    tiny = model_settings.model_copy(
        update={"extract_max_tokens": 16, "extract_retry_max_tokens": 24}
    )
    result = extract_batch(db=db, engine=vllm_engine, settings=tiny, interaction_ids=ids)  # type: ignore[arg-type]
    assert sorted(result.failed) == sorted(ids)
    with db.session(ALL_PROJECTS) as s:
        calls = s.execute(
            select(LLMCall.interaction_id, LLMCall.attempt, LLMCall.outcome).order_by(LLMCall.id)
        ).all()
        errors = set(s.scalars(select(Interaction.last_error)))
    assert [(c.attempt, c.outcome) for c in calls] == [(1, "truncated")] * 3 + [
        (2, "truncated")
    ] * 3
    assert errors == {"output truncated at the token limit (after 2 attempts)"}


def test_prompt_too_long_fails_alone_and_batch_goes_on(
    db: Database, vllm_engine: object, model_settings: Settings, shared_corpus: Path
) -> None:
    huge = NormalizedInteraction(
        project="acme/huge", source="api", kind="conversation",
        content="word " * 20000, idempotency_key="huge-1",
    )  # fmt: skip
    ids = _ingest(db, [huge, *read_records([shared_corpus], limit=2)])
    roomy = model_settings.model_copy(update={"extract_input_chars": 200_000})
    result = extract_batch(db=db, engine=vllm_engine, settings=roomy, interaction_ids=ids)  # type: ignore[arg-type]
    assert "context" in result.failed[ids[0]]
    assert set(result.extracted) | set(result.failed) == set(ids)
    assert len(result.extracted) >= 1


def test_embeddings_are_normalised_and_twins_merge_once_into_the_older(
    db: Database, embedder: object, model_settings: Settings
) -> None:
    with db.session(ALL_PROJECTS) as s:
        ids = store(
            s,
            [
                NormalizedInteraction(
                    project="acme/x",
                    source="api",
                    kind="conversation",
                    content=f"c{i}",
                    idempotency_key=f"k{i}",
                )
                for i in range(3)
            ],
        ).interaction_ids
        project_id = s.scalar(select(Interaction.project_id).where(Interaction.id == ids[0]))
        titles = [
            "Pin GitHub Actions to a commit",
            "Pin GitHub actions to commits",
            "Document the retry settings",
        ]
        patterns = [
            Pattern(project_id=project_id, type="security", title=t, source_interaction_id=iid,
                    content={"description": t})
            for t, iid in zip(titles, ids, strict=True)
        ]  # fmt: skip
        s.add_all(patterns)
        s.flush()
        pids = [p.id for p in patterns]
    # Embed the newer pattern first: the pair still merges once, into the older pattern.
    r1 = embed_patterns(db=db, embedder=embedder, settings=model_settings, pattern_ids=[pids[1]])  # type: ignore[arg-type]
    r2 = embed_patterns(db=db, embedder=embedder, settings=model_settings, pattern_ids=pids)  # type: ignore[arg-type]
    r3 = embed_patterns(db=db, embedder=embedder, settings=model_settings, pattern_ids=pids)  # type: ignore[arg-type]
    assert (r1.embedded, r2.embedded, r3.embedded) == (1, 2, 0)
    assert (r1.merged, r2.merged, r3.merged) == (0, 1, 0)
    with db.session(ALL_PROJECTS) as s:
        vectors = s.scalars(select(Pattern.embedding).order_by(Pattern.title)).all()
        assert all(np.isclose(np.linalg.norm(np.asarray(v)), 1.0, atol=1e-3) for v in vectors)
        validations = s.execute(
            select(PatternValidation.pattern_id, PatternValidation.validating_pattern_id)
        ).all()
        confirmed, merged = s.get(Pattern, pids[0]), s.get(Pattern, pids[1])
    assert validations == [(pids[0], pids[1])]
    assert confirmed is not None and confirmed.validation_count == 1 and confirmed.is_active
    assert confirmed.validation_status == "pending"  # validated from 2 confirmations
    assert merged is not None and not merged.is_active and merged.superseded_by == pids[0]
