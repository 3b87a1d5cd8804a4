"""Claude engines with the real ``anthropic`` SDK against the loopback Messages API server, the
real budget tables in the embedded Postgres, and extraction/analysis through Claude."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from support.messages_api import Fault, MessagesAPIServer

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import (
    BudgetDay,
    BudgetReservation,
    Interaction,
    LLMCall,
    Pattern,
    Recommendation,
)
from pipeline.extract.analysis import analyze_batch
from pipeline.extract.batch import extract_batch
from pipeline.extract.prompts import extraction_messages
from pipeline.extract.schemas import ExtractionResult, extraction_json_schema
from pipeline.llm.base import GenerationRequest
from pipeline.llm.claude import ClaudeEngine, build_client
from pipeline.llm.claude_batch import ClaudeBatchEngine
from pipeline.settings import Settings
from pipeline.spend import pricing
from pipeline.spend.placement import estimated_cost, place
from pipeline.spend.routing import complexity
from pipeline.types import TaskType

pytestmark = pytest.mark.integration

MODEL = "claude-sonnet-5-5"

#: Text of a pull request complex enough for strategic analysis.
COMPLEX_PR = "Pull request #{i}: redesign the retry architecture, breaking change {i}"


def _settings(server: MessagesAPIServer, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "anthropic_api_key": SecretStr("sk-test"),
        "anthropic_base_url": server.base_url,
        "claude_model": MODEL,
        "claude_max_tokens": 512,
        "claude_max_retries": 2,
        "claude_batch_poll_s": 0.01,
        "daily_budget_usd": Decimal("50"),
    }
    base.update(kw)
    return Settings(**base)


def _request(i: int, **kw: Any) -> GenerationRequest:
    return GenerationRequest(
        messages=extraction_messages(
            f"Pull request #{i}: retry the broker connection with backoff, case {i}",
            max_chars=2000,
        ),
        json_schema=extraction_json_schema(),
        max_tokens=512,
        task_type="pattern_extraction",
        **kw,
    )


def _budget_row(db: Database) -> BudgetDay | None:
    with db.session(ALL_PROJECTS) as s:
        return s.scalars(select(BudgetDay)).first()


def _reservations(db: Database) -> dict[str, int]:
    with db.session(ALL_PROJECTS) as s:
        return {
            k: int(v)
            for k, v in s.execute(
                select(BudgetReservation.status, func.count()).group_by(BudgetReservation.status)
            ).all()
        }


def test_generate_settles_the_real_cost(db: Database, messages_api: MessagesAPIServer) -> None:
    settings = _settings(messages_api)
    engine = ClaudeEngine.from_settings(settings, db)
    out = engine.generate([_request(i) for i in range(3)])
    assert [g.finish_reason for g in out] == ["stop"] * 3
    for g in out:
        ExtractionResult.model_validate_json(g.text)  # structured output, same pydantic model
        assert g.cost_usd > 0 and g.tokens_out > 0
    # The system prompt is a cached block: written once, read by later calls.
    assert sum(g.cache_write_tokens for g in out) > 0
    assert sum(g.cache_read_tokens for g in out) > 0
    row = _budget_row(db)
    assert row is not None
    assert row.reserved_usd == 0
    assert row.spent_usd == sum(g.cost_usd for g in out)
    assert _reservations(db) == {"settled": 3}
    # Each call was counted first: count_tokens, then messages.
    assert len(messages_api.requests_to("/v1/messages/count_tokens")) == 3
    assert len(messages_api.requests_to("/v1/messages")) == 3


def test_cost_prices_cache_tokens_as_such(db: Database, messages_api: MessagesAPIServer) -> None:
    engine = ClaudeEngine.from_settings(_settings(messages_api), db)
    first, second = engine.generate([_request(1)]), engine.generate([_request(1)])
    g1, g2 = first[0], second[0]
    assert g1.cache_write_tokens == g2.cache_read_tokens > 0
    expect = pricing.cost_usd(
        MODEL,
        pricing.TokenUsage(
            input_tokens=g2.tokens_in,
            output_tokens=g2.tokens_out,
            cache_read_tokens=g2.cache_read_tokens,
        ),
    )
    assert g2.cost_usd == expect < g1.cost_usd  # a cache read is cheaper than a cache write


def test_retries_429_with_retry_after_then_succeeds(
    db: Database, messages_api: MessagesAPIServer
) -> None:
    # Faults are consumed one per request: the count passes, then the message gets a 429 with
    # retry-after and a 529, and succeeds on the SDK's second retry.
    messages_api.enqueue_faults([Fault(), Fault(status=429, retry_after=0.2), Fault(status=529)])
    engine = ClaudeEngine.from_settings(_settings(messages_api), db)
    out = engine.generate([_request(1)])
    assert out[0].finish_reason == "stop"
    assert len(messages_api.requests_to("/v1/messages/count_tokens")) == 1
    sent = messages_api.requests_to("/v1/messages")
    assert len(sent) == 3
    assert sent[1].received_at - sent[0].received_at >= 0.19  # retry-after honoured
    assert _reservations(db) == {"settled": 1}


def test_overloaded_past_the_retries_is_deferred_and_released(
    db: Database, messages_api: MessagesAPIServer
) -> None:
    settings = _settings(messages_api, claude_max_retries=1)
    engine = ClaudeEngine(client=build_client(settings), db=db, settings=settings)
    messages_api.enqueue_faults([Fault()] + [Fault(status=529)] * 2)  # count ok, then 2 x 529
    out = engine.generate([_request(1)])
    assert out[0].finish_reason == "deferred"
    assert "529" in (out[0].error or "")
    row = _budget_row(db)
    assert row is not None and row.reserved_usd == 0 and row.spent_usd == 0
    assert _reservations(db) == {"released": 1}


def test_non_json_body_is_deferred_not_raised(
    db: Database, messages_api: MessagesAPIServer
) -> None:
    settings = _settings(messages_api, claude_max_retries=0)
    messages_api.enqueue_faults([Fault(), Fault(invalid_json_body=True)])
    out = ClaudeEngine.from_settings(settings, db).generate([_request(1)])
    assert out[0].finish_reason == "deferred"
    assert _reservations(db) == {"released": 1}


def test_budget_refusal_sends_nothing(db: Database, messages_api: MessagesAPIServer) -> None:
    settings = _settings(messages_api, daily_budget_usd=Decimal("0.001"))
    out = ClaudeEngine.from_settings(settings, db).generate([_request(1)])
    assert out[0].finish_reason == "deferred"
    assert "cannot admit" in (out[0].error or "")
    assert messages_api.requests_to("/v1/messages") == []


def test_fifty_at_once_against_a_budget_for_seven(
    db: Database, messages_api: MessagesAPIServer
) -> None:
    """50 Claude calls at once, a budget that affords exactly 7 worst-case reservations: 7 are
    sent, 43 deferred, and the settled spend stays under the cap.

    The admitted calls are held at the SDK until all 50 have been admitted or refused, so every
    reservation is decided while the admitted ones are in flight (a settled call gives back the
    part of its reservation it did not use, which a later call could then take)."""
    probe = _settings(messages_api)
    from pipeline.llm.claude import message_params

    params = message_params(_request(0), model=MODEL, max_tokens=512)
    counted = build_client(probe).messages.count_tokens(
        **{k: v for k, v in params.items() if k != "max_tokens"}
    )
    worst = pricing.worst_case_usd(MODEL, counted.input_tokens, 512, cache_ttl="5m")
    cap = worst * 7 + worst / 2
    settings = _settings(messages_api, daily_budget_usd=cap, claude_concurrency=50)
    client = build_client(settings)
    decided = 0
    all_decided = threading.Condition()

    def decide() -> None:
        nonlocal decided
        with all_decided:
            decided += 1
            all_decided.notify_all()

    send = client.messages.create

    def held_create(**kwargs: Any) -> Any:
        decide()
        with all_decided:
            assert all_decided.wait_for(lambda: decided >= 50, timeout=120)
        return send(**kwargs)

    client.messages.create = held_create
    engine = ClaudeEngine(client=client, db=db, settings=settings)
    barrier = threading.Barrier(50)
    results: list[Any] = [None] * 50

    def one(i: int) -> None:
        barrier.wait()
        results[i] = engine.generate([_request(0)])[0]
        if results[i].finish_reason == "deferred":
            decide()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    reasons = [r.finish_reason for r in results]
    assert reasons.count("stop") == 7
    assert reasons.count("deferred") == 43
    assert len(messages_api.requests_to("/v1/messages")) == 7
    row = _budget_row(db)
    assert row is not None
    assert row.reserved_usd == 0
    assert 0 < row.spent_usd <= cap
    assert _reservations(db) == {"settled": 7}


def test_batches_collect_by_custom_id_and_resubmit_failures(
    db: Database, messages_api: MessagesAPIServer
) -> None:
    messages_api.batch_error_fraction = 0.3
    messages_api.batch_expire_fraction = 0.2
    settings = _settings(messages_api, claude_batch_max_rounds=6)
    requests = [_request(i) for i in range(12)]
    out = ClaudeBatchEngine(client=build_client(settings), db=db, settings=settings,
                            sleep=lambda s: None).generate(requests)  # fmt: skip
    assert all(g.finish_reason == "stop" for g in out), [g.error for g in out]
    # Results came back shuffled; matching by custom_id puts each answer on its request: the
    # server's answer is a function of the request, so the same request sent alone agrees.
    messages_api.batch_error_fraction = messages_api.batch_expire_fraction = 0.0
    sync = ClaudeEngine.from_settings(_settings(messages_api), db).generate(requests[:4])
    assert [g.text for g in out[:4]] == [g.text for g in sync]
    submitted = messages_api.requests_to("/v1/messages/batches")
    assert len(submitted) >= 2  # errored/expired ones went again
    # Half price: the same usage costs half of the Messages API price.
    usage = pricing.TokenUsage(
        input_tokens=out[0].tokens_in,
        output_tokens=out[0].tokens_out,
        cache_read_tokens=out[0].cache_read_tokens,
        cache_write_tokens=out[0].cache_write_tokens,
    )
    assert out[0].cost_usd == pricing.cost_usd(MODEL, usage, batch=True)
    states = _reservations(db)
    assert states.get("reserved", 0) == 0
    assert states["settled"] == 12 + 4


def test_batches_give_up_after_the_rounds(db: Database, messages_api: MessagesAPIServer) -> None:
    messages_api.batch_expire_fraction = 1.0
    settings = _settings(messages_api, claude_batch_max_rounds=2)
    out = ClaudeBatchEngine(client=build_client(settings), db=db, settings=settings,
                            sleep=lambda s: None).generate([_request(1), _request(2)])  # fmt: skip
    assert [g.finish_reason for g in out] == ["deferred", "deferred"]
    assert "expired" in (out[0].error or "")
    assert len(messages_api.requests_to("/v1/messages/batches")) == 2
    row = _budget_row(db)
    assert row is not None and row.spent_usd == 0 and row.reserved_usd == 0


def test_a_batch_that_never_ends_is_canceled_at_its_deadline(
    db: Database, messages_api: MessagesAPIServer
) -> None:
    messages_api.batch_polls_until_ended = 10**9  # stays in_progress until canceled
    settings = _settings(
        messages_api, claude_batch_max_rounds=1, claude_batch_deadline_s=0.5,
        claude_batch_poll_s=0.05,
    )  # fmt: skip
    started = time.monotonic()
    out = ClaudeBatchEngine(client=build_client(settings), db=db, settings=settings).generate(
        [_request(1), _request(2)]
    )
    assert time.monotonic() - started < 10
    assert [g.finish_reason for g in out] == ["deferred", "deferred"]
    assert "still processing after" in (out[0].error or "")
    (batch,) = messages_api.requests_to("/v1/messages/batches")
    cancels = [r for r in messages_api.requests if r.path.endswith("/cancel")]
    assert len(cancels) == 1 and batch.json()  # the batch was asked to cancel
    assert len(messages_api.requests_to(cancels[0].path)) == 1
    assert _reservations(db) == {"released": 2}
    row = _budget_row(db)
    assert row is not None and row.spent_usd == 0 and row.reserved_usd == 0


def test_extraction_through_claude_retries_a_malformed_output(
    db: Database, messages_api: MessagesAPIServer, stored_interactions: Callable[..., list[int]]
) -> None:
    ids = stored_interactions(2, kind="pull_request", content=COMPLEX_PR)
    # One request in flight, so faults meet requests in order: the first count passes, the first
    # message comes back malformed (not of the schema), the rest are well formed.
    settings = _settings(messages_api, claude_concurrency=1)
    messages_api.enqueue_faults([Fault(), Fault(malformed_output=True)])
    engine = ClaudeEngine(client=build_client(settings), db=db, settings=settings)
    result = extract_batch(db=db, engine=engine, settings=settings, interaction_ids=ids)
    assert sorted(result.extracted) == ids
    with db.session(ALL_PROJECTS) as s:
        methods = set(s.scalars(select(Pattern.extraction_method)).all())
        calls = s.execute(select(LLMCall.provider, LLMCall.outcome, LLMCall.cost_usd)).all()
    assert methods == {"commercial_llm"}
    assert sorted(c.outcome for c in calls) == ["invalid", "ok", "ok"]
    assert all(c.provider == "claude" and c.cost_usd > 0 for c in calls)


def test_analysis_through_claude_stores_linked_recommendations(
    db: Database, messages_api: MessagesAPIServer, stored_interactions: Callable[..., list[int]]
) -> None:
    ids = stored_interactions(2, kind="pull_request", content=COMPLEX_PR)
    settings = _settings(messages_api)
    engine = ClaudeEngine.from_settings(settings, db)
    extract_batch(db=db, engine=engine, settings=settings, interaction_ids=ids)
    with db.session(ALL_PROJECTS) as s:
        s.execute(
            Interaction.__table__.update()
            .where(Interaction.id.in_(ids))
            .values(analysis_status="pending")
        )
    result = analyze_batch(db=db, engine=engine, settings=settings, interaction_ids=ids)
    assert sorted(result.done) == ids and result.recommendations >= 2
    again = analyze_batch(db=db, engine=engine, settings=settings, interaction_ids=ids)
    assert again.llm_calls == 0  # done analyses are not repeated
    with db.session(ALL_PROJECTS) as s:
        recs = s.scalars(select(Recommendation)).all()
        statuses = set(s.scalars(select(Interaction.analysis_status)).all())
    assert len(recs) == result.recommendations
    assert statuses == {"done"}
    assert {r.provider for r in recs} == {"claude"}


def test_failures_are_marked_in_one_statement_on_waiting_rows_only(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    """mark_failed / mark_analysis_failed: each row gets its own reason; rows another run
    finished meanwhile are left alone."""
    from pipeline.extract.analysis import mark_analysis_failed
    from pipeline.extract.write import mark_failed

    ids = stored_interactions(3, kind="pull_request", content=COMPLEX_PR)
    with db.session(ALL_PROJECTS) as s:
        s.execute(
            Interaction.__table__.update()
            .where(Interaction.id == ids[2])
            .values(status="extracted", analysis_status="pending")
        )
    mark_failed(db, {ids[0]: "first", ids[1]: "second", ids[2]: "not waiting"})
    mark_analysis_failed(db, {ids[2]: "analysis failed", ids[0]: "no analysis pending"})
    with db.session(ALL_PROJECTS) as s:
        rows = {
            r.id: r
            for r in s.execute(
                select(
                    Interaction.id,
                    Interaction.status,
                    Interaction.last_error,
                    Interaction.analysis_status,
                    Interaction.analysis_error,
                )
            ).all()
        }
    assert (rows[ids[0]].status, rows[ids[0]].last_error) == ("failed", "first")
    assert (rows[ids[1]].status, rows[ids[1]].last_error) == ("failed", "second")
    assert (rows[ids[2]].status, rows[ids[2]].last_error) == ("extracted", None)
    assert (rows[ids[2]].analysis_status, rows[ids[2]].analysis_error) == (
        "failed",
        "analysis failed",
    )
    assert rows[ids[0]].analysis_status is None


def test_placement_scores_the_batch_once_and_routes_what_one_budget_snapshot_affords(
    db: Database, messages_api: MessagesAPIServer, stored_interactions: Callable[..., list[int]]
) -> None:
    ids = stored_interactions(4, kind="pull_request", content=COMPLEX_PR)
    with db.session(ALL_PROJECTS) as s:
        rows = {r.id: r for r in s.scalars(select(Interaction).where(Interaction.id.in_(ids)))}
    one = estimated_cost(_settings(messages_api), len(rows[ids[0]].content), 10**6)
    settings = _settings(
        messages_api, llm_strategy="claude_only", daily_budget_usd=one * Decimal("2.5")
    )
    placed = place(db, settings, ids, TaskType.PATTERN_EXTRACTION)
    # The snapshot grows with each interaction sent to Claude: 2 fit, the other 2 stay local.
    assert (len(placed.claude), len(placed.local)) == (2, 2)
    assert sorted(placed.claude + placed.local) == ids
    assert set(placed.reasons) == set(ids)
    with db.session(ALL_PROJECTS) as s:
        stored = dict(s.execute(select(Interaction.id, Interaction.complexity)).all())
    assert stored == {i: complexity(rows[i].content, rows[i].metadata_) for i in ids}
