"""The exact response cache on the real embedded Postgres: what hits, what misses, what is never
stored, row-level security, Claude's budget, and the hit rate in stats, report and metrics.

The engine is the scripted :class:`support.replay_llm.ReplayLLM` (or the real Claude SDK against
the loopback Messages API): what is under test is the cache and the database, and the stand-in
counts every request that reaches it.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, update
from support.messages_api import MessagesAPIServer
from support.replay_llm import ReplayLLM, edge, pattern

from pipeline.db.engine import ALL_PROJECTS, Database, ProjectScope
from pipeline.db.models import (
    BudgetReservation,
    Interaction,
    LLMCall,
    Pattern,
    Project,
    ResponseCacheEntry,
)
from pipeline.extract.analysis import analyze_batch
from pipeline.extract.batch import extract_batch
from pipeline.llm.claude import ClaudeEngine
from pipeline.ops.metrics import PipelineCollector
from pipeline.ops.report import build_report
from pipeline.ops.stats import interaction_outcomes, table_counts
from pipeline.settings import Settings

pytestmark = pytest.mark.integration

PR_A = "Pull request #1: reconnect to the broker after a connection loss"
PR_B = "Pull request #2: document the retry settings"
PR_C = "Pull request #3: pin GitHub Actions to commits"
OUTPUTS = {
    "Patterns extracted from it": {  # strategic analysis requests (checked first)
        "recommendations": [{"title": "Test broker restarts", "body": "Add a chaos test.",
                             "priority": "high", "confidence": 0.7,
                             "patterns": ["Retry broker connections"]}],
    },
    PR_A: {"patterns": [pattern("Retry broker connections"), pattern("Back off exponentially"),
                        pattern("Add a reconnect test", "testing")],
           "relationships": [edge("Add a reconnect test", "Retry broker connections")]},
    PR_B: {"patterns": [pattern("Document every setting", "documentation")], "relationships": []},
    PR_C: {"patterns": [pattern("Pin actions to a commit", "security")], "relationships": []},
}  # fmt: skip


def _settings(**kw: Any) -> Settings:
    return Settings(database_url=None, redis_url=None, **kw)


@pytest.fixture()
def store(stored_interactions: Callable[..., list[int]]) -> Callable[..., list[int]]:
    """``store(texts, run="r1", project=...)``: one interaction per text, keyed by run and index
    (a new run stores the same text again as a new interaction, like a new delivery id)."""
    counter = iter(range(10**6))

    def make(texts: list[str], run: str = "r1", project: str = "acme/widgets") -> list[int]:
        return [
            stored_interactions(1, content=text, key=f"{run}-{next(counter)}", project=project)[0]
            for text in texts
        ]

    return make


def _calls(db: Database, ids: list[int]) -> list[tuple[int, bool, str, int, Decimal]]:
    with db.session(ALL_PROJECTS) as s:
        rows = s.execute(
            select(LLMCall.interaction_id, LLMCall.cache_hit, LLMCall.outcome, LLMCall.tokens_out,
                   LLMCall.cost_usd)
            .where(LLMCall.interaction_id.in_(ids))
            .order_by(LLMCall.id)
        ).all()  # fmt: skip
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _entries(db: Database) -> int:
    with db.session(ALL_PROJECTS) as s:
        return int(s.scalar(select(func.count()).select_from(ResponseCacheEntry)) or 0)


def test_same_content_under_new_interactions_makes_no_model_call(
    db: Database, store: Callable[..., list[int]]
) -> None:
    llm, settings = ReplayLLM(OUTPUTS), _settings()
    first = store([PR_A, PR_B])
    done = extract_batch(db=db, engine=llm, settings=settings, interaction_ids=first)
    assert (len(llm.requests), done.llm_calls, done.cache_hits) == (2, 2, 0)
    assert _entries(db) == 2

    again = store([PR_A, PR_B, PR_C], run="r2")  # A and B again under new ids, C is new
    result = extract_batch(db=db, engine=llm, settings=settings, interaction_ids=again)
    assert [r.interaction_id for r in llm.requests[2:]] == [again[2]]  # only C reached the model
    assert (result.llm_calls, result.cache_hits) == (1, 2)
    assert sorted(result.extracted) == again and len(result.pattern_ids) == 5
    assert sorted(c[:2] for c in _calls(db, again)) == [(again[0], True), (again[1], True),
                                                        (again[2], False)]  # fmt: skip
    hits = [c for c in _calls(db, again) if c[1]]
    assert all(c[2] == "ok" and c[3] == 0 and c[4] == 0 for c in hits)
    with db.session(ALL_PROJECTS) as s:
        titles = s.scalars(
            select(Pattern.title).where(Pattern.source_interaction_id == again[0])
        ).all()
        assert sorted(titles) == sorted(p["title"] for p in OUTPUTS[PR_A]["patterns"])  # type: ignore[index]
        outcomes = interaction_outcomes(s, again)
        counts = table_counts(s)
        report = build_report(s, settings=settings, days=1)
    assert outcomes.llm_calls["local"] == 1 and outcomes.cache_hits == 2
    assert (counts["cache_hits"], counts["llm_calls_by_provider"]) == (2, {"local": 3})
    assert counts["cache_hit_rate"] == pytest.approx(2 / 5)
    assert counts["llm_response_cache"] == 3
    assert report.daily[-1].cache_hits == 2 and report.daily[-1].llm_calls == {"local": 3}
    assert (report.response_cache.hits, report.response_cache.model_calls) == (2, 3)
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in PipelineCollector(db, settings, None).collect()
        for sample in family.samples
    }
    labels = (("model", "replay"), ("provider", "local"))
    assert samples[("patterns_response_cache_hits_total", labels)] == 2
    assert samples[("patterns_response_cache_hit_ratio", labels)] == pytest.approx(2 / 5)
    ok = (("model", "replay"), ("outcome", "ok"), ("provider", "local"))
    assert samples[("patterns_llm_calls_total", ok)] == 3  # hits are not model calls


def test_another_model_or_project_misses_and_row_level_security_hides_other_entries(
    db: Database, store: Callable[..., list[int]]
) -> None:
    llm, settings = ReplayLLM(OUTPUTS), _settings()
    extract_batch(db=db, engine=llm, settings=settings,
                  interaction_ids=store([PR_A], project="acme/widgets"))  # fmt: skip
    other_project = store([PR_A], run="r2", project="acme/gadgets")
    result = extract_batch(db=db, engine=llm, settings=settings, interaction_ids=other_project)
    assert (result.llm_calls, result.cache_hits, len(llm.requests)) == (1, 0, 2)

    other_model = ReplayLLM(OUTPUTS)
    other_model.model_name = "replay-2"
    same_project = store([PR_A], run="r3", project="acme/widgets")
    result = extract_batch(db=db, engine=other_model, settings=settings,
                           interaction_ids=same_project)  # fmt: skip
    assert (result.llm_calls, result.cache_hits, len(other_model.requests)) == (1, 0, 1)

    with db.session(ALL_PROJECTS) as s:
        projects = dict(s.execute(select(Project.name, Project.id)).all())
        assert s.scalar(select(func.count()).select_from(ResponseCacheEntry)) == 3
    with db.session(ProjectScope(projects["acme/gadgets"])) as s:
        seen = s.execute(select(ResponseCacheEntry.project_id, ResponseCacheEntry.model)).all()
    assert seen == [(projects["acme/gadgets"], "replay")]


def test_failed_outputs_are_never_cached(db: Database, store: Callable[..., list[int]]) -> None:
    settings = _settings()
    silent = ReplayLLM({})  # every answer is invalid: retried once, then failed
    first = store([PR_A])
    result = extract_batch(db=db, engine=silent, settings=settings, interaction_ids=first)
    assert list(result.failed) == first and len(silent.requests) == 2
    assert _entries(db) == 0
    llm = ReplayLLM(OUTPUTS)
    result = extract_batch(db=db, engine=llm, settings=settings,
                           interaction_ids=store([PR_A], run="r2"))  # fmt: skip
    assert (result.llm_calls, result.cache_hits, len(result.extracted)) == (1, 0, 1)
    assert _entries(db) == 1


def test_the_setting_turns_lookups_and_writes_off(
    db: Database, store: Callable[..., list[int]]
) -> None:
    llm, settings = ReplayLLM(OUTPUTS), _settings(response_cache=False)
    extract_batch(db=db, engine=llm, settings=_settings(), interaction_ids=store([PR_A]))
    result = extract_batch(db=db, engine=llm, settings=settings,
                           interaction_ids=store([PR_A, PR_B], run="r2"))  # fmt: skip
    assert (result.llm_calls, result.cache_hits, len(llm.requests)) == (2, 0, 3)
    assert _entries(db) == 1  # only the first batch's output


def test_strategic_analysis_of_the_same_content_is_served_from_the_cache(
    db: Database, store: Callable[..., list[int]]
) -> None:
    llm, settings = ReplayLLM(OUTPUTS), _settings()
    done = []
    for run in ("r1", "r2"):
        ids = store([PR_A], run=run)
        extract_batch(db=db, engine=llm, settings=settings, interaction_ids=ids)
        with db.session(ALL_PROJECTS) as s:
            s.execute(update(Interaction).where(Interaction.id.in_(ids))
                      .values(analysis_status="pending"))  # fmt: skip
        done.append(analyze_batch(db=db, engine=llm, settings=settings, interaction_ids=ids))
    # The second run's prompt lists the same three titles in the same order: one model call in
    # all for the analyses, one for the extractions.
    assert [(d.llm_calls, d.cache_hits, len(d.done)) for d in done] == [(1, 0, 1), (0, 1, 1)]
    assert len(llm.requests) == 2 and done[1].recommendations == 1


def test_a_claude_hit_reserves_and_spends_nothing(
    db: Database, messages_api: MessagesAPIServer, store: Callable[..., list[int]]
) -> None:
    settings = _settings(
        anthropic_api_key=SecretStr("sk-test"), anthropic_base_url=messages_api.base_url,
        claude_model="claude-sonnet-5-5", claude_max_retries=0,
        daily_budget_usd=Decimal("50"),
    )  # fmt: skip
    engine = ClaudeEngine.from_settings(settings, db)
    first = extract_batch(db=db, engine=engine, settings=settings, interaction_ids=store([PR_A]))
    assert first.llm_calls == 1 and len(first.extracted) == 1
    sent = len(messages_api.requests)
    with db.session(ALL_PROJECTS) as s:
        reservations = s.scalar(select(func.count()).select_from(BudgetReservation))
    again = store([PR_A], run="r2")
    result = extract_batch(db=db, engine=engine, settings=settings, interaction_ids=again)
    assert (result.llm_calls, result.cache_hits, result.extracted) == (0, 1, again)
    assert len(messages_api.requests) == sent  # not even a token count
    with db.session(ALL_PROJECTS) as s:
        assert s.scalar(select(func.count()).select_from(BudgetReservation)) == reservations
    assert _calls(db, again) == [(again[0], True, "ok", 0, Decimal(0))]
