"""The loopback Messages API server, driven by the real ``anthropic`` SDK (and raw httpx where
the SDK's own checks would stop a malformed request before it is sent)."""

from __future__ import annotations

import json
from typing import Literal

import anthropic
import httpx
import pydantic
import pytest
from support.messages_api import (
    MESSAGE_OVERHEAD_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    Fault,
    MessagesAPIServer,
    approx_tokens,
)

pytestmark = pytest.mark.integration

MODEL = "claude-sonnet-4-5"
HEADERS = {"x-api-key": "test", "anthropic-version": "2023-06-01"}


class Pattern(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    name: str = pydantic.Field(min_length=3, max_length=40)
    kind: Literal["retry", "timeout", "config"]
    confidence: float = pydantic.Field(ge=0, le=1)
    occurrences: int = pydantic.Field(ge=1, le=9)


class Extraction(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    version: Literal[1]
    patterns: list[Pattern] = pydantic.Field(min_length=1, max_length=5)
    summary: str | None
    actionable: bool
    tags: list[str] = pydantic.Field(min_length=3)


def _client(server: MessagesAPIServer, max_retries: int = 2) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key="test", base_url=server.base_url, max_retries=max_retries)


def _text(message: anthropic.types.Message) -> str:
    block = message.content[0]
    assert block.type == "text"
    return block.text


def _user(text: str) -> list[anthropic.types.MessageParam]:
    return [{"role": "user", "content": text}]


def _structured() -> anthropic.types.OutputConfigParam:
    schema = Extraction.model_json_schema()
    return {"format": {"type": "json_schema", "schema": schema}}


def test_structured_output_validates_and_follows_the_prompt(messages_api: MessagesAPIServer):
    client = _client(messages_api)
    prompt = "Celery worker retried the task after a broker timeout"
    message = client.messages.create(
        model=MODEL, max_tokens=2000, messages=_user(prompt), output_config=_structured()
    )

    assert message.type == "message" and message.role == "assistant" and message.model == MODEL
    assert message.id.startswith("msg_")
    assert message.stop_reason == "end_turn"
    extraction = Extraction.model_validate_json(_text(message))
    assert len(extraction.patterns) == 2  # max(minItems, min(maxItems, 2))
    assert len(extraction.tags) == 3  # minItems wins
    # Strings are made of the prompt's words (the last one may be cut at maxLength).
    assert all(word in prompt for p in extraction.patterns for word in p.name.split())
    assert message.usage.output_tokens == approx_tokens(_text(message))
    assert message.usage.service_tier == "standard"

    again = client.messages.create(
        model=MODEL, max_tokens=2000, messages=_user(prompt), output_config=_structured()
    )
    other = client.messages.create(
        model=MODEL,
        max_tokens=2000,
        messages=_user("Redis lost the result"),
        output_config=_structured(),
    )
    assert _text(again) == _text(message)  # deterministic per request body
    assert _text(other) != _text(message)
    recorded = messages_api.requests_to("/v1/messages")[0]
    assert recorded.headers["authorization"] == "Bearer test"  # how SDK 2.11.0 sends api_key
    assert recorded.json()["output_config"]["format"]["schema"] == Extraction.model_json_schema()


def test_plain_text_without_output_config(messages_api: MessagesAPIServer):
    message = _client(messages_api).messages.create(
        model=MODEL, max_tokens=100, messages=_user("flaky beat scheduler")
    )
    assert "flaky beat scheduler" in _text(message)


def test_count_tokens_matches_the_documented_formula_and_usage(messages_api: MessagesAPIServer):
    client = _client(messages_api)
    system = "abcd" * 10  # 40 characters: 10 tokens
    counted = client.messages.count_tokens(model=MODEL, system=system, messages=_user("hello"))
    assert counted.input_tokens == REQUEST_OVERHEAD_TOKENS + 10 + MESSAGE_OVERHEAD_TOKENS + 2

    system_blocks: list[anthropic.types.TextBlockParam] = [
        {
            "type": "text",
            "text": "You extract patterns. " * 20,
            "cache_control": {"type": "ephemeral"},
        },
        {"type": "text", "text": "Answer in JSON."},
    ]
    messages = _user("the task hung on acks_late")
    counted = client.messages.count_tokens(
        model=MODEL, system=system_blocks, messages=messages, output_config=_structured()
    )
    schema_tokens = approx_tokens(json.dumps(Extraction.model_json_schema(), sort_keys=True))
    assert counted.input_tokens > schema_tokens
    for _ in range(2):  # a cache write, then a cache read: the total stays the same
        usage = client.messages.create(
            model=MODEL,
            max_tokens=2000,
            system=system_blocks,
            messages=messages,
            output_config=_structured(),
        ).usage
        created, read = usage.cache_creation_input_tokens, usage.cache_read_input_tokens
        assert created is not None and read is not None
        assert usage.input_tokens + created + read == counted.input_tokens


def test_prompt_caching_writes_then_reads_the_system_prefix(messages_api: MessagesAPIServer):
    client = _client(messages_api)
    cached_text = "Shared instructions for every extraction call. " * 10  # 470 chars
    system: list[anthropic.types.TextBlockParam] = [
        {"type": "text", "text": cached_text, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": "tail"},
    ]
    prefix = REQUEST_OVERHEAD_TOKENS + approx_tokens(cached_text)

    first = client.messages.create(
        model=MODEL, max_tokens=50, system=system, messages=_user("one")
    ).usage
    second = client.messages.create(
        model=MODEL, max_tokens=50, system=system, messages=_user("two")
    ).usage
    assert (first.cache_creation_input_tokens, first.cache_read_input_tokens) == (prefix, 0)
    assert first.cache_creation is not None
    assert first.cache_creation.ephemeral_5m_input_tokens == prefix
    assert (second.cache_creation_input_tokens, second.cache_read_input_tokens) == (0, prefix)
    assert second.input_tokens == first.input_tokens  # "one" and "two" count the same
    assert first.input_tokens == approx_tokens("tail") + MESSAGE_OVERHEAD_TOKENS + 1

    plain = client.messages.create(
        model=MODEL, max_tokens=50, system=cached_text, messages=_user("one")
    ).usage
    assert (plain.cache_creation_input_tokens, plain.cache_read_input_tokens) == (0, 0)


def test_max_tokens_truncates_the_text(messages_api: MessagesAPIServer):
    message = _client(messages_api).messages.create(
        model=MODEL, max_tokens=3, messages=_user("a long question"), output_config=_structured()
    )
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 3
    assert len(_text(message)) == 12
    with pytest.raises(pydantic.ValidationError):
        Extraction.model_validate_json(_text(message))


def test_429_with_retry_after_is_retried_by_the_sdk(messages_api: MessagesAPIServer):
    messages_api.enqueue_faults([Fault(status=429, retry_after=0.2)])
    message = _client(messages_api, max_retries=2).messages.create(
        model=MODEL, max_tokens=50, messages=_user("hello")
    )
    assert message.stop_reason == "end_turn"
    calls = messages_api.requests_to("/v1/messages")
    assert len(calls) == 2
    assert calls[1].received_at - calls[0].received_at >= 0.19
    assert calls[1].headers["x-stainless-retry-count"] == "1"


def test_429_error_shape_and_headers(messages_api: MessagesAPIServer):
    messages_api.enqueue_faults([Fault(status=429, retry_after=3, retry_after_ms=1500)])
    with pytest.raises(anthropic.RateLimitError) as caught:
        _client(messages_api, max_retries=0).messages.create(
            model=MODEL, max_tokens=50, messages=_user("hello")
        )
    response = caught.value.response
    assert response.headers["retry-after"] == "3"
    assert response.headers["retry-after-ms"] == "1500"
    assert response.headers["request-id"].startswith("req_")
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "rate_limit_error",
            "message": "Number of request tokens has exceeded your rate limit (injected)",
        },
    }


def test_529_then_success(messages_api: MessagesAPIServer):
    messages_api.enqueue_faults([Fault(status=529, retry_after_ms=10)])
    message = _client(messages_api, max_retries=1).messages.create(
        model=MODEL, max_tokens=50, messages=_user("hello")
    )
    assert _text(message)
    assert len(messages_api.requests_to("/v1/messages")) == 2


def test_529_without_retries_raises_overloaded(messages_api: MessagesAPIServer):
    messages_api.enqueue_faults([Fault(status=529)])
    with pytest.raises(anthropic.OverloadedError) as caught:
        _client(messages_api, max_retries=0).messages.create(
            model=MODEL, max_tokens=50, messages=_user("hello")
        )
    assert isinstance(caught.value, anthropic.InternalServerError)
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_500_and_x_should_retry(messages_api: MessagesAPIServer):
    messages_api.enqueue_faults([Fault(status=500, should_retry=False)])
    with pytest.raises(anthropic.InternalServerError) as caught:
        _client(messages_api, max_retries=3).messages.create(
            model=MODEL, max_tokens=50, messages=_user("hello")
        )
    assert caught.value.status_code == 500
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert len(messages_api.requests_to("/v1/messages")) == 1  # x-should-retry: false obeyed


def test_faults_are_consumed_in_order_by_count_tokens_too(messages_api: MessagesAPIServer):
    messages_api.enqueue_faults([Fault(status=500, retry_after_ms=1), Fault(status=529)])
    client = _client(messages_api, max_retries=0)
    with pytest.raises(anthropic.InternalServerError):
        client.messages.count_tokens(model=MODEL, messages=_user("x"))
    with pytest.raises(anthropic.OverloadedError):
        client.messages.create(model=MODEL, max_tokens=5, messages=_user("x"))
    assert client.messages.count_tokens(model=MODEL, messages=_user("x")).input_tokens == 5


def test_malformed_output_and_invalid_json_body(messages_api: MessagesAPIServer):
    client = _client(messages_api, max_retries=0)
    messages_api.enqueue_faults([Fault(malformed_output=True), Fault(invalid_json_body=True)])
    message = client.messages.create(
        model=MODEL, max_tokens=2000, messages=_user("x"), output_config=_structured()
    )
    assert message.stop_reason == "end_turn"
    with pytest.raises(pydantic.ValidationError):
        Extraction.model_validate_json(_text(message))
    with pytest.raises(ValueError):  # the SDK lets json.JSONDecodeError through
        client.messages.create(model=MODEL, max_tokens=50, messages=_user("x"))


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}]}, "max_tokens"),
        (
            {"model": MODEL, "max_tokens": 0, "messages": [{"role": "user", "content": "x"}]},
            "max_tokens",
        ),
        ({"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": MODEL, "max_tokens": 5, "messages": []}, "messages"),
        ({"model": MODEL, "max_tokens": 5, "messages": [{"role": "bot", "content": "x"}]}, "role"),
    ],
)
def test_invalid_bodies_are_400(messages_api: MessagesAPIServer, body: dict, needle: str):
    response = httpx.post(f"{messages_api.base_url}/v1/messages", headers=HEADERS, json=body)
    assert response.status_code == 400
    error = response.json()
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert needle in error["error"]["message"]

    with pytest.raises(anthropic.BadRequestError):
        _client(messages_api).post("/v1/messages", body=body, cast_to=anthropic.types.Message)


def test_unparseable_body_missing_version_and_missing_key(messages_api: MessagesAPIServer):
    url = f"{messages_api.base_url}/v1/messages"
    response = httpx.post(url, headers=HEADERS, content=b"{not json")
    assert response.status_code == 400
    assert response.json()["error"]["type"] == "invalid_request_error"

    response = httpx.post(url, headers={"x-api-key": "k"}, json={})
    assert response.status_code == 400
    assert "anthropic-version" in response.json()["error"]["message"]

    for auth in ({}, {"authorization": "Basic"}):
        response = httpx.post(url, headers={"anthropic-version": "2023-06-01", **auth}, json={})
        assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert response.headers["content-type"] == "application/json"

    response = httpx.get(f"{messages_api.base_url}/v1/nothing", headers=HEADERS)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def _batch_requests(n: int) -> list[dict]:
    return [
        {
            "custom_id": f"req-{i}",
            "params": {
                "model": MODEL,
                "max_tokens": 2000,
                "messages": [{"role": "user", "content": f"interaction {i} about retries"}],
                "output_config": _structured(),
            },
        }
        for i in range(n)
    ]


def test_batch_lifecycle_with_shuffled_expired_and_errored_results(
    messages_api: MessagesAPIServer,
):
    messages_api.batch_polls_until_ended = 2
    messages_api.expire_custom_ids = {"req-1"}
    messages_api.error_custom_ids = {"req-4"}
    client = _client(messages_api)
    requests = _batch_requests(6)

    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 6
    assert batch.results_url is None and batch.ended_at is None
    assert (batch.expires_at - batch.created_at).total_seconds() == 24 * 3600

    assert client.messages.batches.retrieve(batch.id).processing_status == "in_progress"
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None
    counts = ended.request_counts
    assert (counts.processing, counts.succeeded, counts.errored, counts.expired) == (0, 4, 1, 1)
    assert ended.results_url == f"{messages_api.base_url}/v1/messages/batches/{batch.id}/results"

    results = list(client.messages.batches.results(batch.id))
    order = [r.custom_id for r in results]
    assert sorted(order) == [f"req-{i}" for i in range(6)]
    assert order != sorted(order)  # shuffled (seeded: deterministic)
    by_id = {r.custom_id: r.result for r in results}
    assert by_id["req-1"].type == "expired"
    errored = by_id["req-4"]
    assert errored.type == "errored"
    assert errored.error.error.type == "api_error"
    for custom_id in ("req-0", "req-2", "req-3", "req-5"):
        result = by_id[custom_id]
        assert result.type == "succeeded"
        assert result.message.usage.service_tier == "batch"
        extraction = Extraction.model_validate_json(_text(result.message))
        assert extraction.patterns
    results_call = messages_api.requests_to(f"/v1/messages/batches/{batch.id}/results", "GET")
    assert len(results_call) == 1

    # The fault sets are consumed: a resubmission of the failed ones succeeds.
    again = client.messages.batches.create(
        requests=[r for r in requests if r["custom_id"] in ("req-1", "req-4")]  # type: ignore[misc]
    )
    client.messages.batches.retrieve(again.id)
    assert client.messages.batches.retrieve(again.id).request_counts.succeeded == 2
    assert {r.result.type for r in client.messages.batches.results(again.id)} == {"succeeded"}

    listed = client.messages.batches.list(limit=1)
    assert [b.id for b in listed.data] == [again.id]
    assert listed.has_more
    second = client.messages.batches.list(limit=1, after_id=again.id)
    assert ([b.id for b in second.data], second.has_more) == ([batch.id], False)
    assert [b.id for b in client.messages.batches.list()] == [again.id, batch.id]

    deleted = client.messages.batches.delete(batch.id)
    assert (deleted.id, deleted.type) == (batch.id, "message_batch_deleted")
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(batch.id)


def _errored(client: anthropic.Anthropic, requests: list[dict]) -> set[str]:
    """The prompts of the requests one batch of ``requests`` errored."""
    batch = client.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    prompt = {r["custom_id"]: r["params"]["messages"][0]["content"] for r in requests}
    return {
        prompt[r.custom_id]
        for r in client.messages.batches.results(batch.id)
        if r.result.type == "errored"
    }


def test_batch_fractions_are_seeded(messages_api: MessagesAPIServer):
    messages_api.batch_error_fraction = 0.5
    client = _client(messages_api)
    batch = client.messages.batches.create(requests=_batch_requests(20))  # type: ignore[arg-type]
    counts = client.messages.batches.retrieve(batch.id).request_counts
    assert 0 < counts.errored < 20
    assert counts.succeeded + counts.errored == 20


def test_batch_fraction_draws_follow_params_and_attempt_not_custom_id() -> None:
    """Clients choose random ``custom_id`` s; the same requests must fail the same way on a
    fresh server, and a resubmission must draw again."""
    first = _batch_requests(20)
    renamed = [{**r, "custom_id": f"other-{i}"} for i, r in enumerate(first)]
    rounds = []
    for requests in (first, renamed):
        with MessagesAPIServer(batch_error_fraction=0.5) as server:
            client = _client(server)
            rounds.append((_errored(client, requests), _errored(client, requests)))
    assert rounds[0] == rounds[1]
    first_try, second_try = rounds[0]
    assert first_try and first_try != second_try


def test_batch_cancel_and_validation(messages_api: MessagesAPIServer):
    messages_api.batch_polls_until_ended = 5
    client = _client(messages_api)
    batch = client.messages.batches.create(requests=_batch_requests(3))  # type: ignore[arg-type]
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.delete(batch.id)  # still in progress
    canceling = client.messages.batches.cancel(batch.id)
    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    ended = client.messages.batches.retrieve(batch.id)
    assert ended.processing_status == "ended"
    assert ended.request_counts.canceled == 3
    assert {r.result.type for r in client.messages.batches.results(batch.id)} == {"canceled"}

    duplicate = _batch_requests(2)
    duplicate[1]["custom_id"] = duplicate[0]["custom_id"]
    with pytest.raises(anthropic.BadRequestError, match="duplicate"):
        client.messages.batches.create(requests=duplicate)  # type: ignore[arg-type]
    missing = _batch_requests(2)
    del missing[1]["params"]["max_tokens"]
    with pytest.raises(anthropic.BadRequestError, match=r"requests\.1\.params\.max_tokens"):
        client.messages.batches.create(requests=missing)  # type: ignore[arg-type]


def test_server_stops_and_restarts_cleanly():
    server = MessagesAPIServer().start()
    url = server.base_url
    assert (
        httpx.post(f"{url}/v1/messages/count_tokens", headers=HEADERS, json={}).status_code == 400
    )
    server.stop()
    server.stop()  # idempotent
    with pytest.raises(httpx.ConnectError):
        httpx.get(url, timeout=2)
