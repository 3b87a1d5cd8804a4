"""Trivial verdicts and label-free signals on the real Postgres: a trivial answer marks the
interaction (no patterns, ``skipped_trivial``), every stored pattern carries its grounding and
title-copy signals, and both show in ``patterns report`` (JSON and table) and ``/metrics``."""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from support.replay_llm import ReplayLLM, pattern
from typer.testing import CliRunner

from pipeline.api.app import create_app
from pipeline.cli import app
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, Pattern
from pipeline.extract.batch import extract_batch
from pipeline.intake.normalize import NormalizedInteraction
from pipeline.intake.store import store
from pipeline.ops.quality import read_signals
from pipeline.ops.report import build_report
from pipeline.ops.stats import interaction_outcomes
from pipeline.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("restore_logging")]

BUMP = "Pull request #1: Bump redis from 4.5.1 to 4.5.4\n\nBumps redis."
FIX = (
    "Pull request #2: Fix retry of broker connections\n\n"
    "The worker hung; this adds a backoff loop between reconnects."
)
OUTPUTS = {
    "Bump redis": {"trivial": True, "patterns": [], "relationships": []},
    "Fix retry": {
        "trivial": False,
        "patterns": [
            # grounded, not a copy
            pattern("Back off between reconnects", evidence="adds a backoff loop"),
            # a copy of the title, evidence made up
            pattern("Fix retry of broker connections", "bug_fix", evidence="retries forever"),
        ],
        "relationships": [],
    },
}


def _settings() -> Settings:
    return Settings(database_url=None, redis_url=None)


@pytest.fixture()
def extracted(db: Database) -> tuple[Database, list[int]]:
    records = [
        NormalizedInteraction(project="acme/widgets", source="api", kind="pull_request",
                              content=text, idempotency_key=f"k{i}")
        for i, text in enumerate((BUMP, FIX))
    ]  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        ids = store(s, records).interaction_ids
    result = extract_batch(db=db, engine=ReplayLLM(OUTPUTS), settings=_settings(),  # type: ignore[arg-type]
                           interaction_ids=ids)  # fmt: skip
    assert sorted(result.extracted) == sorted(ids) and result.trivial == [ids[0]]
    assert len(result.pattern_ids) == 2
    return db, ids


def test_trivial_answer_and_signals_are_stored(extracted: tuple[Database, list[int]]) -> None:
    db, (bump, fix) = extracted
    with db.session(ALL_PROJECTS) as s:
        rows = {i.id: (i.status, i.trivial) for i in s.scalars(select(Interaction))}
        assert rows == {bump: ("extracted", True), fix: ("extracted", False)}
        signals = {
            p.title: (p.evidence_grounded, p.title_copy)
            for p in s.scalars(select(Pattern).where(Pattern.source_interaction_id == fix))
        }
        assert signals == {
            "Back off between reconnects": (True, False),
            "Fix retry of broker connections": (False, True),
        }
        assert interaction_outcomes(s, [bump, fix]).skipped_trivial == 1
        summary = read_signals(s)
    assert (summary.grounding_rate, summary.title_copy_rate) == (0.5, 0.5)
    assert (summary.extracted, summary.skipped_trivial) == (2, 1)
    assert [(m.model, m.patterns) for m in summary.by_model] == [("replay", 2)]


def _cli(args: list[str], database_url: str) -> Any:
    from pipeline.settings import get_settings

    env = {"DATABASE_URL": database_url, "REDIS_URL": "", "COLUMNS": "200"}
    get_settings.cache_clear()  # the command reads the environment set here
    try:
        return CliRunner().invoke(app, args, env=env)
    finally:
        get_settings.cache_clear()


def test_report_shows_the_signals(extracted: tuple[Database, list[int]], database_url: str) -> None:
    db, _ = extracted
    with db.session(ALL_PROJECTS) as s:
        report = build_report(s, settings=_settings(), days=1)
    assert report.signals.grounding_rate == 0.5 and report.signals.skipped_trivial == 1
    as_json = _cli(["report", "--json"], database_url)
    assert as_json.exit_code == 0, as_json.output
    signals = json.loads(as_json.stdout.strip().splitlines()[-1])["signals"]
    assert signals["title_copy_rate"] == 0.5 and signals["skipped_trivial"] == 1
    table = _cli(["report"], database_url)
    assert table.exit_code == 0, table.output
    assert "grounding rate" in table.stdout and "50.0%" in table.stdout
    assert "1 of 2 extracted" in table.stdout


def test_metrics_show_the_signals(
    extracted: tuple[Database, list[int]],
    live_server: Callable[[Any], AbstractContextManager[str]],
) -> None:
    db, _ = extracted
    with live_server(create_app(_settings(), db=db)) as url:
        body = httpx.get(f"{url}/metrics", timeout=60).text
    samples = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float | None:
        return samples.get((name, frozenset(labels.items())))

    assert value("patterns_pattern_signals_total", model="replay", signal="measured") == 2
    assert value("patterns_pattern_signals_total", model="replay", signal="grounded") == 1
    assert value("patterns_pattern_grounding_ratio", model="replay") == 0.5
    assert value("patterns_pattern_title_copy_ratio", model="replay") == 0.5
    assert value("patterns_interactions_trivial_total") == 1
