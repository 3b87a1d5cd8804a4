"""Unit tests of the exact response cache's pure parts: the request digest and key, the attempt
loop serving cached outputs without the engine, the hit rate and its Prometheus metrics. No
model, no database."""

from __future__ import annotations

import dataclasses
import json
import uuid
from collections.abc import Sequence
from decimal import Decimal

import pytest

from pipeline.errors import ModelOutputError
from pipeline.extract.attempts import generate_with_retries, one_retry
from pipeline.extract.batch import CACHE_VERSIONS, parse_output
from pipeline.extract.cache import CachedOutput, Versions, cache_key, request_sha256
from pipeline.extract.prompts import PROMPT_VERSION, extraction_messages
from pipeline.extract.schemas import SCHEMA_VERSION, extraction_json_schema
from pipeline.llm.base import Generation, GenerationRequest
from pipeline.ops.metrics import LLMTotals, _response_cache_metrics
from pipeline.ops.stats import cache_hit_rate
from pipeline.types import Priority, Provider, TaskType

PROJECT = uuid.UUID("00000000-0000-0000-0000-000000000001")
VALID = json.dumps(
    {
        "patterns": [
            {"type": "error_handling", "title": "Retry broker connections with backoff",
             "description": "Reconnect instead of hanging.", "confidence": 0.8,
             "evidence": "adds a retry loop"}
        ],
        "relationships": [],
    }
)  # fmt: skip


def _request(
    text: str = "Pull request #7: retry the broker", **overrides: object
) -> GenerationRequest:
    base = GenerationRequest(
        messages=extraction_messages(text, max_chars=2000),
        json_schema=extraction_json_schema(),
        max_tokens=512,
        seed=11,
        task_type=TaskType.PATTERN_EXTRACTION,
        interaction_id=7,
    )
    return dataclasses.replace(base, **overrides)  # type: ignore[arg-type]


def test_digest_is_sha256_hex_of_what_decides_the_output_and_ignores_the_work() -> None:
    digest = request_sha256(_request())
    assert len(digest) == 64 and set(digest) <= set("0123456789abcdef")
    # The seed follows the interaction id; the id, task type and priority describe the work.
    same = _request(seed=99, interaction_id=8, task_type=None, priority=Priority.EMERGENCY)
    assert request_sha256(same) == digest
    # Anything the model sees or is constrained by changes it.
    assert request_sha256(_request("Pull request #8: retry the broker")) != digest
    assert request_sha256(_request(max_tokens=1024)) != digest
    assert request_sha256(_request(temperature=0.3)) != digest
    assert request_sha256(_request(json_schema={"type": "object"})) != digest


def test_digest_does_not_depend_on_dict_order() -> None:
    a = GenerationRequest([{"role": "user", "content": "x"}], {"a": 1, "b": 2}, 64)
    b = GenerationRequest([{"content": "x", "role": "user"}], {"b": 2, "a": 1}, 64)
    assert request_sha256(a) == request_sha256(b)


def test_key_names_project_task_model_and_versions() -> None:
    key = cache_key(_request(), project_id=PROJECT, model="smol", versions=CACHE_VERSIONS)
    assert (key.project_id, key.task_type, key.model) == (PROJECT, "pattern_extraction", "smol")
    assert (key.prompt_version, key.schema_version) == (PROMPT_VERSION, SCHEMA_VERSION)
    assert key.prompt_sha256 == request_sha256(_request())
    other = cache_key(
        _request(), project_id=PROJECT, model="smol",
        versions=Versions(TaskType.PATTERN_EXTRACTION, PROMPT_VERSION + "x", SCHEMA_VERSION),
    )  # fmt: skip
    assert other != key and other.prompt_sha256 == key.prompt_sha256
    assert key.as_tuple()[:2] == (PROJECT, key.prompt_sha256)


class _Counting:
    """An engine that answers every request with ``text`` and counts what it was asked."""

    provider = Provider.LOCAL
    model_name = "counting"

    def __init__(self, text: str = VALID) -> None:
        self.text = text
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        self.requests.extend(requests)
        return [Generation(self.text, "stop", tokens_in=100, tokens_out=20) for _ in requests]


def _run(engine: _Counting, keys: list[int], cached: dict[int, CachedOutput]):  # type: ignore[no-untyped-def]
    return generate_with_retries(
        engine,
        keys,
        request=lambda key, _retry: _request(f"Pull request #{key}", interaction_id=key),
        parse=parse_output,
        decide=lambda attempt, exc: one_retry(attempt, exc, max_tokens=1024, temperature=0.3),
        task_type=TaskType.PATTERN_EXTRACTION,
        cached=cached,
    )


def test_hits_make_no_engine_call_and_are_recorded_as_hits() -> None:
    engine = _Counting()
    out = _run(engine, [1, 2], {1: CachedOutput(VALID, 90, 30), 2: CachedOutput(VALID, 90, 30)})
    assert engine.requests == []
    assert sorted(out.results) == [1, 2] and out.hits == {1, 2} and out.accepted == {}
    assert out.model_calls == 0 and (out.tokens_in, out.tokens_out) == (0, 0)
    assert [(c["cache_hit"], c["outcome"], c["tokens_out"], c["cost_usd"], c["batch_size"])
            for c in out.calls] == [(True, "ok", 0, Decimal(0), 0)] * 2  # fmt: skip
    assert [c["interaction_id"] for c in out.calls] == [1, 2]


def test_misses_and_stale_hits_go_to_the_engine_and_only_its_outputs_are_accepted() -> None:
    engine = _Counting()
    # 1 hits; 2 misses; 3's cached text no longer parses: a miss, not a failure.
    out = _run(engine, [1, 2, 3], {1: CachedOutput(VALID, 1, 1), 3: CachedOutput("not json", 1, 1)})
    assert [r.interaction_id for r in engine.requests] == [2, 3]
    assert out.hits == {1} and sorted(out.accepted) == [2, 3] and out.model_calls == 2
    assert sorted(out.results) == [1, 2, 3] and not out.failed


def test_a_bad_engine_output_is_never_accepted() -> None:
    engine = _Counting(text="not json")
    out = _run(engine, [1], {})
    assert out.accepted == {} and 1 in out.failed and len(engine.requests) == 2  # one retry


def test_hit_rate() -> None:
    assert cache_hit_rate(0, 0) is None
    assert cache_hit_rate(3, 1) == 0.75
    assert cache_hit_rate(0, 4) == 0.0


def test_metrics_count_hits_and_the_ratio_per_model() -> None:
    def row(outcome: str, calls: int, hit: bool, model: str = "smol") -> LLMTotals:
        return LLMTotals("local", model, outcome, calls, 0, 0, 0, 0, Decimal(0), cache_hit=hit)

    rows = [row("ok", 3, True), row("ok", 1, False), row("deferred", 5, False),
            row("ok", 2, False, model="other")]  # fmt: skip
    hits, ratio = list(_response_cache_metrics(rows))
    assert {tuple(s.labels.values()): s.value for s in hits.samples} == {
        ("local", "smol"): 3, ("local", "other"): 0,
    }  # fmt: skip
    assert {tuple(s.labels.values()): s.value for s in ratio.samples} == {
        ("local", "smol"): 0.75, ("local", "other"): 0.0,
    }  # fmt: skip


@pytest.mark.parametrize("text", ["", "not json"])
def test_parse_failures_are_model_output_errors(text: str) -> None:
    """What makes a cached output stale: the same error the engine's outputs raise."""
    with pytest.raises(ModelOutputError):
        parse_output(text, "stop")
