"""The issue's done-when, in small: ``patterns run`` with the ``hybrid`` strategy, a tiny daily
budget and ``ANTHROPIC_BASE_URL`` at the loopback Messages API server. Claude takes the strategic
analyses the budget admits, the local model everything else, spend stays under the cap, and
nothing fails because the budget ran out. Then ``patterns costs``, ``--claude-batch``, and the
API's ``/metrics`` over the database the run filled."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from support.messages_api import MessagesAPIServer

from pipeline.db.engine import ALL_PROJECTS
from pipeline.intake.normalize import parse_record
from pipeline.spend.routing import complexity

pytestmark = pytest.mark.e2e

PATTERNS = Path(sys.executable).with_name("patterns")
#: Six strategic analyses would cost about 6 x worst case; the budget admits 2 of them.
BUDGET = "0.03"


def _pick(src: Path, dest: Path, complex_n: int, simple_n: int) -> Path:
    """Write ``complex_n`` of the corpus's most complex pull requests and ``simple_n`` ordinary
    ones to ``dest``."""
    scored = []
    with gzip.open(src, "rt") as fh:
        for line in fh:
            try:
                record = parse_record(json.loads(line))
            except Exception:  # malformed or skipped lines are not candidates
                continue
            if not hasattr(record, "content"):
                continue
            scored.append((complexity(record.content, record.metadata), line))
    scored.sort(key=lambda item: item[0])
    chosen = [line for _, line in scored[-complex_n:]] + [
        line for score, line in scored[: len(scored) // 2] if score < 0.5
    ][:simple_n]
    dest.write_text("".join(chosen))
    return dest


def _complex_interactions(data_dir: Path) -> list[tuple[str, str | None]]:
    """``(status, analysis_status)`` of the stored interactions whose complexity reaches the
    strategic-analysis threshold, read from the database the CLI filled."""
    from sqlalchemy import select

    from pipeline.db.engine import Database
    from pipeline.db.models import Interaction
    from pipeline.settings import Settings
    from pipeline.types import TaskType

    settings = Settings(data_dir=data_dir)
    threshold = settings.complexity_thresholds[TaskType.STRATEGIC_ANALYSIS]
    db = Database.connect(settings, migrate=False)
    try:
        with db.session(ALL_PROJECTS) as session:
            rows = session.execute(
                select(Interaction.status, Interaction.analysis_status)
                .where(Interaction.complexity >= threshold)
                .order_by(Interaction.id)
            ).all()
    finally:
        db.dispose()
    return [(status, analysis) for status, analysis in rows]


def _run(args: list[str], env: dict[str, str], timeout: float = 900) -> dict[str, object]:
    proc = subprocess.run(
        [str(PATTERNS), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_hybrid_run_with_a_tiny_budget(
    data_dir: Path, shared_corpus: Path, extract_model_path: str,
    messages_api: MessagesAPIServer,
) -> None:  # fmt: skip
    sample = _pick(shared_corpus, data_dir / "sample.jsonl", complex_n=6, simple_n=6)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATTERNS_")}
    for name in ("DATABASE_URL", "REDIS_URL"):
        env.pop(name, None)
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        PATTERNS_DATA_DIR=str(data_dir),
        PATTERNS_EXTRACT_MODEL=extract_model_path,
        PATTERNS_LLM_STRATEGY="hybrid",
        PATTERNS_DAILY_BUDGET_USD=BUDGET,
        PATTERNS_CLAUDE_BATCH_POLL_S="0.05",
        ANTHROPIC_API_KEY="sk-test",
        ANTHROPIC_BASE_URL=messages_api.base_url,
    )
    summary = _run(["run", str(sample), "--json"], env)
    assert summary["interactions"] == 12
    calls = summary["llm_calls"]
    assert calls["local"] > 0 and calls["claude"] > 0  # type: ignore[index]
    assert 0 < Decimal(str(summary["cost_usd"])) <= Decimal(BUDGET)
    # Every complex pull request whose extraction succeeded was analysed (none left pending): by
    # Claude while the budget lasted, by the local model after. (The small local model can fail a
    # pull request's extraction; that one is not analysed, and counts among `failed`.)
    complex_prs = _complex_interactions(data_dir)
    assert len(complex_prs) == 6
    extracted = [analysis for status, analysis in complex_prs if status == "extracted"]
    assert len(extracted) >= 6 - summary["failed"]  # type: ignore[operator]
    assert extracted == ["done"] * len(extracted)
    analyses: dict[str, int] = summary["analyses"]  # type: ignore[assignment]
    assert analyses == {"done": len(extracted)}
    assert len(extracted) >= 2
    assert summary["recommendations"] >= 2  # type: ignore[operator]
    reasons = " ".join(summary["failure_reasons"])  # type: ignore[arg-type]
    assert "budget" not in reasons
    assert summary["extracted"] + summary["failed"] == 12
    assert summary["failed"] <= 2

    costs = _run(["costs", "--json"], env, timeout=120)
    assert Decimal(str(costs["spent_usd"])) == Decimal(str(summary["cost_usd"]))
    assert Decimal(str(costs["spent_usd"])) <= Decimal(BUDGET)
    assert Decimal(str(costs["reserved_usd"])) == 0
    assert Decimal(str(costs["local_calls_on_claude_usd"])) > 0

    # With --claude-batch and more budget: those already analysed are not sent again, the 2 new
    # complex ones go through the Message Batches API.
    more = _pick(shared_corpus, data_dir / "more.jsonl", complex_n=8, simple_n=0)
    env["PATTERNS_DAILY_BUDGET_USD"] = "1"
    batch = _run(["run", str(more), "--claude-batch", "--json"], env)
    assert batch["llm_calls"]["claude"] > 0  # type: ignore[index]
    # The new complex pull requests' analyses (those whose extraction did not fail) went out
    # together, in one Message Batch.
    (created,) = messages_api.requests_to("/v1/messages/batches")
    new_analyses = sum(batch["analyses"].values()) - len(extracted)  # type: ignore[union-attr]
    assert 1 <= len(json.loads(created.body)["requests"]) == new_analyses
    assert Decimal(str(batch["cost_usd"])) > 0

    # What an operator scrapes reflects the real run: the API's /metrics over the same database.
    from fastapi.testclient import TestClient
    from prometheus_client.parser import text_string_to_metric_families

    from pipeline.api.app import create_app
    from pipeline.settings import Settings

    settings = Settings(data_dir=data_dir, daily_budget_usd=Decimal("1"))
    with TestClient(create_app(settings)) as client:
        body = client.get("/metrics").text
    samples = [s for family in text_string_to_metric_families(body) for s in family.samples]

    def total(name: str, **labels: str) -> float:
        return sum(
            s.value
            for s in samples
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
        )

    assert total("patterns_database_up") == 1
    assert total("patterns_llm_calls_total", provider="claude") > 0
    assert total("patterns_llm_calls_total", provider="local") > 0
    spent = float(_run(["costs", "--json"], env, timeout=120)["spent_usd"])  # type: ignore[arg-type]
    assert total("patterns_llm_cost_usd_total", provider="claude") == pytest.approx(spent)
    assert total("patterns_budget_spent_usd") == pytest.approx(spent)
    assert total("patterns_interactions", status="extracted") >= 10
    assert total("patterns_budget_cap_usd") == 1
