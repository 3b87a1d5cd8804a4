"""Routing as a table of inputs and decisions, and the complexity score (pure, no I/O)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from pipeline.intake.records import MalformedRecord, read_records
from pipeline.queues import QUEUE_CLAUDE, QUEUE_EXTRACT
from pipeline.settings import Settings
from pipeline.spend.budget import BudgetState
from pipeline.spend.routing import (
    ComplexityFeatures,
    RoutingTask,
    complexity,
    complexity_features,
    complexity_score,
    needs_strategic_analysis,
    route,
)
from pipeline.types import ROUTED_TASK_TYPES, Priority, Provider, Strategy, TaskType

CORPUS = (
    Path(__file__).resolve().parents[2].parent / "shared/data/github/celery-pull-requests.jsonl.gz"
)

T = TaskType


def _settings(strategy: Strategy = Strategy.HYBRID, key: bool = True, **kw: object) -> Settings:
    return Settings(
        llm_strategy=strategy,
        anthropic_api_key=SecretStr("k") if key else None,
        daily_budget_usd=Decimal("1.00"),
        emergency_budget_usd=Decimal("2.00"),
        **kw,  # type: ignore[arg-type]
    )


def _budget(spent: str = "0", reserved: str = "0") -> BudgetState:
    return BudgetState(
        day=dt.date(2026, 11, 21),
        cap_usd=Decimal("1.00"),
        emergency_cap_usd=Decimal("2.00"),
        spent_usd=Decimal(spent),
        reserved_usd=Decimal(reserved),
    )


# (strategy, task type, complexity, cost, spent, priority, local_failed, key) -> provider, reason
ROUTES = [
    # hybrid: below the type's threshold -> local
    (Strategy.HYBRID, T.STRATEGIC_ANALYSIS, 0.79, "0.10", "0", "normal", False, True,
     Provider.LOCAL, "complexity 0.79 < 0.80"),
    # hybrid: at the threshold, capability 0.40 < 0.8 -> Claude
    (Strategy.HYBRID, T.STRATEGIC_ANALYSIS, 0.80, "0.10", "0", "normal", False, True,
     Provider.CLAUDE, "daily budget"),
    # hybrid: pattern extraction is capable locally (0.85 >= 0.8) whatever the complexity
    (Strategy.HYBRID, T.PATTERN_EXTRACTION, 0.99, "0.10", "0", "normal", False, True,
     Provider.LOCAL, "local capability 0.85 >= preference 0.80"),
    (Strategy.HYBRID, T.CONTENT_ANALYSIS, 0.95, "0.10", "0", "normal", False, True,
     Provider.LOCAL, "local capability 0.90"),
    # hybrid: relationship mapping (0.75 < 0.8) goes to Claude from 0.4
    (Strategy.HYBRID, T.RELATIONSHIP_MAPPING, 0.40, "0.10", "0", "normal", False, True,
     Provider.CLAUDE, "daily budget"),
    (Strategy.HYBRID, T.RELATIONSHIP_MAPPING, 0.39, "0.10", "0", "normal", False, True,
     Provider.LOCAL, "< 0.40"),
    (Strategy.HYBRID, T.COMPLEX_REASONING, 0.90, "0.10", "0", "normal", False, True,
     Provider.CLAUDE, "daily budget"),
    (Strategy.HYBRID, T.DECISION_MAKING, 0.69, "0.10", "0", "normal", False, True,
     Provider.LOCAL, "< 0.70"),
    # hybrid: the budget cannot admit it -> local, reason names the budget
    (Strategy.HYBRID, T.STRATEGIC_ANALYSIS, 0.95, "0.10", "0.95", "normal", False, True,
     Provider.LOCAL, "but"),
    # ... unless emergency: the emergency budget (2.00) admits it
    (Strategy.HYBRID, T.STRATEGIC_ANALYSIS, 0.95, "0.10", "0.95", "emergency", False, True,
     Provider.CLAUDE, "emergency budget"),
    (Strategy.HYBRID, T.STRATEGIC_ANALYSIS, 0.95, "0.10", "1.95", "emergency", False, True,
     Provider.LOCAL, "but"),
    # exactly at the cap is admitted
    (Strategy.HYBRID, T.STRATEGIC_ANALYSIS, 0.95, "0.10", "0.90", "normal", False, True,
     Provider.CLAUDE, "daily budget"),
    # no API key: local whatever the strategy
    (Strategy.HYBRID, T.STRATEGIC_ANALYSIS, 0.95, "0.10", "0", "normal", False, False,
     Provider.LOCAL, "ANTHROPIC_API_KEY is not set"),
    (Strategy.CLAUDE_ONLY, T.PATTERN_EXTRACTION, 0.0, "0.10", "0", "normal", False, False,
     Provider.LOCAL, "ANTHROPIC_API_KEY"),
    # claude_only
    (Strategy.CLAUDE_ONLY, T.PATTERN_EXTRACTION, 0.0, "0.10", "0", "normal", False, True,
     Provider.CLAUDE, "claude_only"),
    (Strategy.CLAUDE_ONLY, T.PATTERN_EXTRACTION, 0.0, "0.10", "1.00", "normal", False, True,
     Provider.LOCAL, "would pass the daily cap"),
    # local_only
    (Strategy.LOCAL_ONLY, T.COMPLEX_REASONING, 1.0, "0.10", "0", "emergency", False, True,
     Provider.LOCAL, "local_only"),
    # local_fallback: local first, Claude once the local model failed
    (Strategy.LOCAL_FALLBACK, T.COMPLEX_REASONING, 1.0, "0.10", "0", "normal", False, True,
     Provider.LOCAL, "local first"),
    (Strategy.LOCAL_FALLBACK, T.PATTERN_EXTRACTION, 0.1, "0.10", "0", "normal", True, True,
     Provider.CLAUDE, "local model failed"),
    (Strategy.LOCAL_FALLBACK, T.PATTERN_EXTRACTION, 0.1, "0.10", "0.99", "normal", True, True,
     Provider.LOCAL, "would pass the daily cap"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("strategy", "task_type", "score", "cost", "spent", "priority", "failed", "key",
     "provider", "reason"),
    ROUTES,
)  # fmt: skip
def test_route_table(
    strategy: Strategy, task_type: TaskType, score: float, cost: str, spent: str,
    priority: str, failed: bool, key: bool, provider: Provider, reason: str,
) -> None:  # fmt: skip
    settings = _settings(strategy, key)
    decision = route(
        RoutingTask(task_type, score, Decimal(cost), Priority(priority), failed),
        _budget(spent),
        settings,
    )
    assert decision.provider is provider, decision.reason
    assert reason in decision.reason
    assert decision.queue == (QUEUE_CLAUDE if provider is Provider.CLAUDE else QUEUE_EXTRACT)
    assert decision.model == (
        settings.claude_model if provider is Provider.CLAUDE else decision.model
    )


def test_reserved_money_counts_against_the_budget() -> None:
    task = RoutingTask(T.STRATEGIC_ANALYSIS, 0.9, Decimal("0.30"))
    assert route(task, _budget("0.50", "0.20"), _settings()).claude
    assert not route(task, _budget("0.50", "0.21"), _settings()).claude


def test_thresholds_and_capabilities_are_configurable() -> None:
    settings = _settings(
        complexity_thresholds={"pattern_extraction": 0.5},
        local_capability={"pattern_extraction": 0.5},
    )
    # Given types replace the defaults; the others keep theirs.
    assert settings.complexity_thresholds[T.PATTERN_EXTRACTION] == 0.5
    assert settings.complexity_thresholds[T.STRATEGIC_ANALYSIS] == 0.8
    task = RoutingTask(T.PATTERN_EXTRACTION, 0.6, Decimal("0.01"))
    assert route(task, _budget(), settings).claude
    assert not route(task, _budget(), _settings()).claude
    with pytest.raises(ValidationError):
        _settings(local_capability={"pattern_extraction": 1.5})


def test_strategy_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATTERNS_LLM_STRATEGY", "local_fallback")
    monkeypatch.setenv("PATTERNS_DAILY_BUDGET_USD", "0.25")
    monkeypatch.setenv("PATTERNS_COMPLEXITY_THRESHOLDS", '{"decision_making": 0.1}')
    s = Settings()
    assert s.llm_strategy is Strategy.LOCAL_FALLBACK
    assert s.daily_budget_usd == Decimal("0.25")
    assert s.complexity_thresholds[T.DECISION_MAKING] == 0.1
    assert s.complexity_thresholds[T.COMPLEX_REASONING] == 0.9


def test_defaults_from_the_mission() -> None:
    s = Settings()
    assert [s.complexity_thresholds[t] for t in ROUTED_TASK_TYPES] == [0.3, 0.4, 0.2, 0.8, 0.9, 0.7]
    assert [s.local_capability[t] for t in ROUTED_TASK_TYPES] == [
        0.85,
        0.75,
        0.90,
        0.40,
        0.30,
        0.45,
    ]
    assert (s.daily_budget_usd, s.emergency_budget_usd) == (Decimal(50), Decimal(100))
    assert s.local_preference == 0.8
    assert s.llm_strategy is Strategy.HYBRID


def test_the_error_fix_batch_is_never_routed_to_claude() -> None:
    for strategy in Strategy:
        decision = route(
            RoutingTask(TaskType.ERROR_FIX, 1.0, Decimal("0.01"), Priority.EMERGENCY, True),
            _budget("0"),
            _settings(strategy),
        )
        assert decision.provider is Provider.LOCAL, (strategy, decision.reason)
        assert "error_fix always runs on the local model" in decision.reason


# --- complexity ----------------------------------------------------------------------------


def test_complexity_features() -> None:
    text = (
        "Pull request #9: redesign the broker protocol\n\nThis is a breaking migration of the "
        "architecture.\n\n```python\nx = 1\n```\n\nFiles changed (2):\n- a.py (+10/-2)\n"
        "- b.py (+1/-0)"
    )
    f = complexity_features(text)
    assert f.code_blocks == 1
    assert f.files == 2  # from the "- path (+a/-d)" lines
    assert f.keywords == 4  # protocol, breaking, migration, architecture
    meta = complexity_features(text, {"changed_files": 7, "additions": 300, "deletions": 20})
    assert (meta.files, meta.lines_changed) == (7, 320)


def test_complexity_score_bounds_and_order() -> None:
    empty = ComplexityFeatures(0, 0, 0, 0, 0, 0)
    huge = ComplexityFeatures(100_000, 10, 500, 200, 50_000, 20)
    assert complexity_score(empty) == 0.0
    assert complexity_score(huge) == 1.0
    small = complexity("Fix typo in README")
    big = complexity(
        "Redesign the concurrency architecture: deadlock and race fixes, breaking change "
        + "details " * 300,
        {"changed_files": 25, "additions": 900, "deletions": 400},
    )
    assert 0 < small < 0.3 < 0.8 <= big <= 1


def test_strategic_analysis_only_for_complex_prs_and_issues() -> None:
    s = _settings()
    assert needs_strategic_analysis("pull_request", 0.8, s)
    assert needs_strategic_analysis("issue", 0.95, s)
    assert not needs_strategic_analysis("pull_request", 0.79, s)
    assert not needs_strategic_analysis("issue_comment", 0.99, s)


@pytest.mark.skipif(not CORPUS.exists(), reason="../shared/data not beside the checkout")
def test_complexity_distribution_on_the_corpus() -> None:
    """The calibration the routing module's docstring states: median about 0.38, 2-4% at 0.8+."""
    scores = sorted(
        complexity(r.content, r.metadata)
        for r in read_records([CORPUS], None)
        if not isinstance(r, MalformedRecord)
    )
    n = len(scores)
    assert n > 1500
    assert 0.33 <= scores[n // 2] <= 0.43
    share = sum(s >= 0.8 for s in scores) / n
    assert 0.02 <= share <= 0.04


def test_priority_from_metadata() -> None:
    from pipeline.spend.routing import priority_of

    assert priority_of({"priority": "emergency"}) is Priority.EMERGENCY
    assert priority_of({"priority": "urgent"}) is Priority.NORMAL
    assert priority_of(None) is Priority.NORMAL
