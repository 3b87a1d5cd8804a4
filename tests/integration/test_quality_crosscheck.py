"""The Claude cross-check against the loopback Messages API server with the real SDK, the real
budget tables and the real MiniLM embedder: validations of kind ``cross_check``, routing's
local capability replaced by the measured agreement once there are enough samples (and the
static score before), the alert under 0.7 in the report and /metrics, and no spend past the
daily budget."""

from __future__ import annotations

import dataclasses
import uuid
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import select
from support.messages_api import MessagesAPIServer
from support.replay_llm import ReplayLLM, pattern

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import BudgetDay, Interaction, LLMCall, PatternValidation
from pipeline.extract.batch import extract_batch
from pipeline.extract.schemas import ExtractedPattern, ExtractionResult
from pipeline.intake.normalize import NormalizedInteraction
from pipeline.intake.store import store
from pipeline.llm.claude import ClaudeEngine
from pipeline.ops.quality import read_cross_checks
from pipeline.quality.agreement import effective_capability, measured_agreement
from pipeline.quality.crosscheck import (
    _judge,
    _Local,
    cross_check_batch,
    pick_sample,
    sampled,
)
from pipeline.settings import Settings
from pipeline.spend.placement import place
from pipeline.types import TaskType

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("restore_logging")]

PE = TaskType.PATTERN_EXTRACTION
#: Complex enough (length, keywords) for hybrid routing to consider Claude for extraction.
TEXT = (
    "Pull request #{i}: redesign the retry architecture for broker connections, case {i}\n\n"
    "A breaking change to the concurrency design: workers back off exponentially and the "
    "migration keeps backward compatibility. " * 3
)


def _settings(server: MessagesAPIServer, **kw: Any) -> Settings:
    base: dict[str, Any] = {
        "database_url": None, "redis_url": None,
        "anthropic_api_key": SecretStr("sk-test"), "anthropic_base_url": server.base_url,
        "claude_model": "claude-sonnet-5-5", "claude_max_tokens": 512, "claude_max_retries": 0,
        "daily_budget_usd": Decimal("50"), "quality_sample_rate": 1.0, "quality_min_samples": 4,
    }  # fmt: skip
    return Settings(**(base | kw))


def _extracted(db: Database, n: int) -> list[int]:
    """``n`` pull requests extracted by a local stand-in, one pattern each."""
    records = [
        NormalizedInteraction(project="acme/widgets", source="api", kind="pull_request",
                              content=TEXT.format(i=i), idempotency_key=f"cc{i}")
        for i in range(n)
    ]  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        ids = store(s, records).interaction_ids
    outputs = {
        f"case {i}\n": {"patterns": [pattern(f"Back off exponentially on reconnect {i}")]}
        for i in range(n)
    }
    local = Settings(database_url=None, redis_url=None)
    done = extract_batch(db=db, engine=ReplayLLM(outputs), settings=local, interaction_ids=ids)  # type: ignore[arg-type]
    assert sorted(done.extracted) == sorted(ids)
    return ids


def test_sampling_is_stable_and_follows_the_rate() -> None:
    picked = [i for i in range(10_000) if sampled(i, 0.05)]
    assert 400 < len(picked) < 600
    assert picked == [i for i in range(10_000) if sampled(i, 0.05)]
    assert not any(sampled(i, 0.0) for i in range(100))
    assert all(sampled(i, 1.0) for i in range(100))


def test_no_api_key_no_sample() -> None:
    settings = Settings(database_url=None, redis_url=None, quality_sample_rate=1.0)
    assert pick_sample([1, 2, 3], settings) == []


def test_judging_matches_like_eval(embedder: Any) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    local = {1: _Local(uuid.uuid4(), "", [
        (a, "Retry broker connections with backoff",
         "Retry broker connections with backoff. Reconnect with growing delays."),
        (b, "Document every setting", "Document every setting. Each option gets a docs entry."),
    ])}  # fmt: skip
    claude = ExtractionResult(patterns=[ExtractedPattern(
        type="error_handling", title="Reconnect with exponential backoff",
        description="Retry the broker connection with growing delays.", confidence=0.9,
        evidence="backoff")])  # fmt: skip
    judged = dict((pid, (s, t)) for pid, s, t in _judge(local, {1: claude}, embedder)[1])
    assert judged[a][1] == "Reconnect with exponential backoff" and judged[a][0] >= 0.5
    assert judged[b][1] is None and judged[b][0] < 0.5


def test_cross_check_replaces_capability_after_enough_samples(
    db: Database, messages_api: MessagesAPIServer, embedder: Any
) -> None:
    settings = _settings(messages_api)
    ids = _extracted(db, 6)
    engine = ClaudeEngine.from_settings(settings, db)
    assert place(db, settings, ids[:1], PE).local == ids[:1]  # static 0.85: stays local

    first = cross_check_batch(db=db, engine=engine, embedder=embedder, settings=settings,
                              interaction_ids=pick_sample(ids[:3], settings))  # fmt: skip
    assert sorted(first.checked) == ids[:3] and first.llm_calls == 3
    with db.session(ALL_PROJECTS) as s:
        agreement = measured_agreement(s, settings)[PE]
        assert agreement.samples == 3 and not agreement.in_use  # under quality_min_samples
        assert effective_capability(settings, {PE: agreement})[PE] == 0.85
    assert place(db, settings, ids[:1], PE).local == ids[:1]

    again = cross_check_batch(db=db, engine=engine, embedder=embedder, settings=settings,
                              interaction_ids=ids)  # fmt: skip
    assert sorted(again.checked) == ids[3:]  # the first three are not checked twice
    with db.session(ALL_PROJECTS) as s:
        rows = s.scalars(
            select(PatternValidation).where(PatternValidation.validation_type == "cross_check")
        ).all()
        assert len(rows) == 6 and {r.interaction_id for r in rows} == set(ids)
        assert all(r.evidence["task_type"] == PE.value for r in rows)
        reasons = s.scalars(select(LLMCall.route_reason).where(LLMCall.provider == "claude"))
        assert set(reasons.all()) == {"quality cross-check"}
        agreement = measured_agreement(s, settings)[PE]
    # The loopback server answers with schema-shaped words: Claude seldom agrees.
    assert agreement.in_use and agreement.samples == 6 and agreement.rate < 0.7
    assert agreement.alert
    placed = place(db, settings, ids[:1], PE)
    assert placed.claude == ids[:1], placed.reasons
    assert f"local capability {agreement.rate:.2f}" in placed.reasons[ids[0]]

    with db.session(ALL_PROJECTS) as s:
        report = read_cross_checks(s, settings)
    assert [(r.task_type, r.samples, r.alert) for r in report] == [(PE, 6, True)]


def test_cross_check_never_spends_past_the_budget(
    db: Database, messages_api: MessagesAPIServer, embedder: Any
) -> None:
    ids = _extracted(db, 6)
    roomy = _settings(messages_api)
    engine = ClaudeEngine.from_settings(roomy, db)
    probe = cross_check_batch(db=db, engine=engine, embedder=embedder, settings=roomy,
                              interaction_ids=ids[:1])  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        one = s.scalars(select(BudgetDay)).one().spent_usd
    assert probe.checked == ids[:1] and one > 0
    # Room for about two more worst-case reservations (the worst case exceeds the real cost).
    cap = one * Decimal("4")
    tight = _settings(messages_api, daily_budget_usd=cap)
    out = cross_check_batch(db=db, engine=ClaudeEngine.from_settings(tight, db),
                            embedder=embedder, settings=tight, interaction_ids=ids[1:])  # fmt: skip
    assert out.checked and out.deferred
    assert sorted(out.checked + list(out.deferred)) == ids[1:]
    with db.session(ALL_PROJECTS) as s:
        day = s.scalars(select(BudgetDay)).one()
        assert day.spent_usd <= cap and day.reserved_usd == 0
        checked = {r.interaction_id for r in s.scalars(select(PatternValidation))}
        assert checked == set(ids[:1]) | set(out.checked)
        assert all(i.status == "extracted" for i in s.scalars(select(Interaction)))


def test_a_local_batch_publishes_its_sample_for_cross_check(
    db: Database, messages_api: MessagesAPIServer
) -> None:
    from support.dispatch import RecordingDispatcher

    from pipeline.extract.flow import extract_claimed

    records = [
        NormalizedInteraction(project="acme/widgets", source="api", kind="pull_request",
                              content=text, idempotency_key=f"pub{i}")
        for i, text in enumerate((TEXT.format(i=0), "Pull request #9: Bump x from 1.0 to 1.1"))
    ]  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        lesson, bump = store(s, records).interaction_ids
    outputs = {"case 0\n": {"patterns": [pattern("Back off exponentially on reconnect")]}}
    dispatcher = RecordingDispatcher(eager=True)
    extract_claimed(db=db, engine=ReplayLLM(outputs), settings=_settings(messages_api),  # type: ignore[arg-type]
                    dispatcher=dispatcher, interaction_ids=[lesson, bump], route=False)  # fmt: skip
    assert ("cross_check", [lesson]) in dispatcher.calls  # the trivial bump is not checked
    with db.session(ALL_PROJECTS) as s:
        [other] = store(
            s, [dataclasses.replace(records[0], idempotency_key="pub-off")]
        ).interaction_ids
    quiet = RecordingDispatcher(eager=True)
    off = _settings(messages_api, quality_sample_rate=0.0)
    summary = extract_claimed(db=db, engine=ReplayLLM(outputs), settings=off, dispatcher=quiet,  # type: ignore[arg-type]
                              interaction_ids=[other], route=False)  # fmt: skip
    assert summary.extracted == 1 and not [c for c in quiet.calls if c[0] == "cross_check"]
