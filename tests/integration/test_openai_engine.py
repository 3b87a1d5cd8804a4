"""The OpenAI-compatible engine with the real ``openai`` SDK against a loopback server that speaks
the chat-completions wire format: structured output through ``response_format``, requests in
flight together, per-request errors, and the extraction path (validation, retry, storage) on top."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import openai
import pytest
from sqlalchemy import select
from support.chat_server import Answer, chat_server
from support.replay_llm import pattern

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import LLMCall, Pattern
from pipeline.errors import ConfigurationError, RetryableError
from pipeline.extract.batch import extract_batch
from pipeline.llm.base import GenerationRequest
from pipeline.llm.local import local_engine
from pipeline.llm.openai_compat import OpenAICompatEngine
from pipeline.settings import Settings

pytestmark = pytest.mark.integration

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}


def _request(prompt: str, seed: int | None = 7) -> GenerationRequest:
    return GenerationRequest([{"role": "user", "content": prompt}], SCHEMA, 64, seed=seed)


def _engine(url: str, in_flight: int = 8) -> OpenAICompatEngine:
    client = openai.OpenAI(base_url=url, api_key="k", max_retries=0, timeout=10)
    return OpenAICompatEngine(client, "smol", max_in_flight=in_flight)


def _by_prompt(answers: dict[str, Answer]) -> Callable[[str, int], Answer]:
    return lambda prompt, _n: answers.get(prompt, (200, '{"n": 0}', "stop"))


def test_requests_go_out_together_with_the_schema_and_come_back_in_order() -> None:
    answers = {f"p{i}": (200, json.dumps({"n": i}), "stop") for i in range(8)}
    answers["p5"] = (200, '{"n": 5', "length")
    with chat_server(_by_prompt(answers), delay_s=0.3) as (url, seen):
        engine = _engine(url, in_flight=4)
        out = engine.generate([_request(f"p{i}") for i in range(8)])
        engine.close()
    assert [g.text for g in out] == [answers[f"p{i}"][1] for i in range(8)]
    assert [g.finish_reason for g in out].count("length") == 1 and out[5].finish_reason == "length"
    assert all(g.tokens_in > 0 and g.tokens_out > 0 for g in out)
    assert seen.max_in_flight == 4  # bounded by max_in_flight, and more than one at once
    body = seen.bodies[0]
    assert body["model"] == "smol" and body["seed"] == 7 and body["max_tokens"] == 64
    assert body["response_format"] == {
        "type": "json_schema", "json_schema": {"name": "output", "schema": SCHEMA, "strict": True},
    }  # fmt: skip


def test_a_refused_or_unavailable_request_fails_alone() -> None:
    answers = {"bad": (400, "prompt is too long for the context", ""),
               "busy": (503, "overloaded", "")}  # fmt: skip
    with chat_server(_by_prompt(answers)) as (url, _):
        out = _engine(url).generate([_request("ok"), _request("bad"), _request("busy")])
    assert out[0].finish_reason == "stop" and out[0].text == '{"n": 0}'
    assert out[1].finish_reason == "error" and "too long" in (out[1].error or "")
    assert out[2].finish_reason == "error" and "InternalServerError" in (out[2].error or "")


def test_a_server_that_answers_nothing_is_retryable_and_a_wrong_model_is_configuration() -> None:
    with (
        chat_server(lambda _p, _n: (503, "loading", "")) as (url, _),
        pytest.raises(RetryableError, match="unavailable"),
    ):
        _engine(url).generate([_request("a"), _request("b")])
    with (
        chat_server(lambda _p, _n: (404, "model 'smol' not found", "")) as (url, _),
        pytest.raises(ConfigurationError, match="smol"),
    ):
        _engine(url).generate([_request("a")])
    closed = openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="k", max_retries=0, timeout=2)
    with pytest.raises(RetryableError):
        OpenAICompatEngine(closed, "smol").generate([_request("a")])


def test_settings_choose_the_engine(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("PATTERNS_LOCAL_ENGINE", "openai")
    with pytest.raises(ConfigurationError, match="PATTERNS_OPENAI_MODEL"):
        local_engine(Settings())
    clean_env.setenv("PATTERNS_OPENAI_MODEL", "smol")
    clean_env.setenv("PATTERNS_EXTRACT_BATCH_SIZE", "5")
    engine = local_engine(Settings())
    assert isinstance(engine, OpenAICompatEngine) and engine.max_in_flight == 5


def test_extraction_through_the_server_validates_retries_and_stores(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    """Each interaction's first answer is cut off (invalid JSON), the retry is valid: every
    interaction is extracted after two requests, and both are recorded as calls."""
    ids = stored_interactions(3, content="Retry the broker connection (change marker-{i}-end)")

    def script(prompt: str, n: int) -> Answer:
        number = re.search(r"marker-(\d+)-end", prompt).group(1)  # type: ignore[union-attr]
        body = {"patterns": [pattern(f"Retry lesson number {number}")], "relationships": []}
        return (200, json.dumps(body)[: 20 if n == 0 else None], "length" if n == 0 else "stop")

    with chat_server(script) as (url, seen):
        engine = _engine(url)
        settings = Settings(database_url=None, redis_url=None)  # type: ignore[call-arg]
        result = extract_batch(db=db, engine=engine, settings=settings, interaction_ids=ids)
    assert sorted(result.extracted) == sorted(ids) and not result.failed
    assert len(seen.bodies) == 6 and set(seen.seen.values()) == {2}
    with db.session(ALL_PROJECTS) as s:
        titles = sorted(s.scalars(select(Pattern.title)))
        calls = s.scalars(select(LLMCall.model)).all()
    assert titles == [f"Retry lesson number {i}" for i in range(3)]
    assert len(calls) == 6 and set(calls) == {"smol"}
