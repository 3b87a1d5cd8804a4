"""Prometheus metrics and readiness: ``GET /metrics`` and ``GET /readyz`` on a live server with
the embedded Postgres and the test Redis; the workers' task metrics through real (eager) Celery
tasks."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from decimal import Decimal
from typing import Any

import httpx
import pytest
import redis
from celery import Celery
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert, update

from pipeline.api.app import create_app
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, LLMCall
from pipeline.settings import Settings
from pipeline.spend.reservations import reserve

pytestmark = pytest.mark.integration

Serve = Callable[[Any], AbstractContextManager[str]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
#: A port nothing listens on.
CLOSED_REDIS = "redis://127.0.0.1:1/0"


def _settings(redis_url: str | None) -> Settings:
    return Settings(database_url=None, redis_url=redis_url, daily_budget_usd=Decimal("10"))


def _samples(body: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


def _get(live_server: Serve, settings: Settings, db: Database, path: str) -> httpx.Response:
    app = create_app(settings, db=db)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        return client.get(path)


def _call(provider: str, model: str, outcome: str = "ok", **figures: Any) -> dict[str, Any]:
    return {"provider": provider, "model": model, "task_type": "extract", "outcome": outcome,
            **figures}  # fmt: skip


@pytest.fixture()
def populated(db: Database, stored_interactions: Callable[..., list[int]]) -> Database:
    """Five interactions (two failed for one reason, one dead, two received), four llm_calls
    rows and a 1.25 USD reservation on today's budget."""
    ids = stored_interactions(5, key="metrics-{i}")
    with db.session(ALL_PROJECTS) as s:
        s.execute(
            update(Interaction)
            .where(Interaction.id.in_(ids[:2]))
            .values(status="failed", last_error="invalid JSON after retry")
        )
        s.execute(
            update(Interaction)
            .where(Interaction.id == ids[2])
            .values(status="dead", last_error="gave up after 5 publish attempts")
        )
        s.execute(
            insert(LLMCall),
            [
                _call(
                    "claude",
                    "sonnet",
                    tokens_in=100,
                    tokens_out=40,
                    cache_read_tokens=300,
                    cache_write_tokens=100,
                    cost_usd=Decimal("0.5"),
                ),
                _call("claude", "sonnet", tokens_in=100, tokens_out=60, cost_usd=Decimal("0.25")),
                _call("claude", "sonnet", outcome="error", error="overloaded"),
                _call("local", "smol", tokens_in=10, tokens_out=5),
            ],
        )
    assert reserve(
        db, settings=_settings(None), model="sonnet", amount_usd=Decimal("1.25"),
        task_type="analyze",
    ) is not None  # fmt: skip
    return db


def test_metrics_from_database_and_broker(
    populated: Database, redis_url: str, live_server: Serve
) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.lpush("embed", b"m1", b"m2", b"m3")
        client.lpush("claude", b"m4")
    finally:
        client.close()

    response = _get(live_server, _settings(redis_url), populated, "/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    s = _samples(response.text)
    assert _value(s, "patterns_database_up") == 1
    assert _value(s, "patterns_broker_up") == 1
    assert _value(s, "celery_queue_length", queue_name="embed") == 3
    assert _value(s, "celery_queue_length", queue_name="claude") == 1
    assert _value(s, "celery_queue_length", queue_name="extract.local") == 0
    assert _value(s, "celery_queue_length", queue_name="errorfix") == 0

    assert _value(s, "patterns_interactions", status="received") == 2
    assert _value(s, "patterns_interactions", status="failed") == 2
    assert _value(s, "patterns_interactions", status="dead") == 1
    assert _value(s, "patterns_interactions", status="extracted") == 0
    reason = "patterns_extraction_failures"
    assert _value(s, reason, reason="invalid JSON after retry") == 2
    assert _value(s, reason, reason="gave up after 5 publish attempts") == 1

    sonnet = {"provider": "claude", "model": "sonnet"}
    assert _value(s, "patterns_llm_calls_total", **sonnet, outcome="ok") == 2
    assert _value(s, "patterns_llm_calls_total", **sonnet, outcome="error") == 1
    assert _value(s, "patterns_llm_calls_total", provider="local", model="smol", outcome="ok") == 1
    tokens = "patterns_llm_tokens_total"
    assert _value(s, tokens, **sonnet, kind="input") == 200
    assert _value(s, tokens, **sonnet, kind="output") == 100
    assert _value(s, tokens, **sonnet, kind="cache_read") == 300
    assert _value(s, tokens, **sonnet, kind="cache_write") == 100
    assert _value(s, "patterns_llm_cost_usd_total", **sonnet) == pytest.approx(0.75)
    # 300 read / (200 input + 300 read + 100 written).
    assert _value(s, "patterns_llm_cache_hit_ratio", **sonnet) == pytest.approx(0.5)
    assert _value(s, "patterns_llm_cache_hit_ratio", provider="local", model="smol") == 0

    assert _value(s, "patterns_budget_cap_usd") == 10
    assert _value(s, "patterns_budget_spent_usd") == 0
    assert _value(s, "patterns_budget_reserved_usd") == pytest.approx(1.25)
    assert _value(s, "patterns_budget_remaining_usd") == pytest.approx(8.75)


def test_metrics_survive_a_broker_outage(populated: Database, live_server: Serve) -> None:
    response = _get(live_server, _settings(CLOSED_REDIS), populated, "/metrics")

    assert response.status_code == 200
    s = _samples(response.text)
    assert _value(s, "patterns_broker_up") == 0
    assert "celery_queue_length" not in _names(s)
    assert _value(s, "patterns_database_up") == 1
    assert _value(s, "patterns_interactions", status="failed") == 2


@pytest.fixture()
def dead_db() -> Iterator[Database]:
    """A database nobody listens for."""
    database = Database.from_url(
        "postgresql://nobody@127.0.0.1:1/nothing", connect_args={"connect_timeout": 2}
    )
    yield database
    database.dispose()


def test_metrics_survive_a_database_outage(dead_db: Database, live_server: Serve) -> None:
    response = _get(live_server, _settings(None), dead_db, "/metrics")

    assert response.status_code == 200
    s = _samples(response.text)
    assert _value(s, "patterns_database_up") == 0
    assert "patterns_interactions" not in _names(s)
    assert "patterns_broker_up" not in _names(s)  # no broker configured


def test_readyz_ok_with_database_and_broker(
    db: Database, redis_url: str, live_server: Serve
) -> None:
    response = _get(live_server, _settings(redis_url), db, "/readyz")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "ok"}


def test_readyz_ok_without_broker(db: Database, live_server: Serve) -> None:
    response = _get(live_server, _settings(None), db, "/readyz")

    assert response.status_code == 200
    assert response.json() == {"database": "ok", "broker": "not configured"}


def test_readyz_names_the_broker_when_redis_is_down(db: Database, live_server: Serve) -> None:
    response = _get(live_server, _settings(CLOSED_REDIS), db, "/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["database"] == "ok"
    assert body["broker"].startswith("unavailable")


def test_readyz_names_the_database_when_postgres_is_down(
    dead_db: Database, live_server: Serve
) -> None:
    response = _get(live_server, _settings(None), dead_db, "/readyz")

    assert response.status_code == 503
    assert response.json()["database"].startswith("unavailable")
    assert response.json()["broker"] == "not configured"


def test_worker_task_metrics_count_runs_by_state() -> None:
    import workers.metrics  # noqa: F401  (connects the signal handlers)

    app = Celery("metrics-test", set_as_current=False)
    app.conf.task_always_eager = True
    prefix = f"t{uuid.uuid4().hex[:8]}"
    calls = {"flaky": 0}

    @app.task(name=f"{prefix}.ok")
    def ok() -> int:
        return 1

    @app.task(name=f"{prefix}.boom")
    def boom() -> None:
        raise ValueError("boom")

    @app.task(name=f"{prefix}.flaky", bind=True, max_retries=2, default_retry_delay=0)
    def flaky(self: Any) -> str:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise self.retry(countdown=0)
        return "done"

    assert app.tasks[f"{prefix}.ok"].apply().get() == 1
    assert app.tasks[f"{prefix}.ok"].apply().get() == 1
    assert app.tasks[f"{prefix}.boom"].apply().failed()
    assert app.tasks[f"{prefix}.flaky"].apply().get() == "done"

    def total(name: str, state: str) -> float | None:
        return REGISTRY.get_sample_value(
            "celery_tasks_total", {"name": f"{prefix}.{name}", "state": state}
        )

    def runs(name: str) -> float | None:
        return REGISTRY.get_sample_value(
            "celery_task_runtime_seconds_count", {"name": f"{prefix}.{name}"}
        )

    assert total("ok", "succeeded") == 2
    assert total("ok", "failed") is None
    assert total("boom", "failed") == 1
    assert total("boom", "succeeded") is None
    assert total("flaky", "retried") == 1
    assert total("flaky", "succeeded") == 1
    assert runs("ok") == 2
    assert runs("boom") == 1
    assert runs("flaky") == 2  # the retried run and the one that succeeded
    assert REGISTRY.get_sample_value(
        "celery_task_runtime_seconds_sum", {"name": f"{prefix}.ok"}
    ) == pytest.approx(0, abs=1.0)
