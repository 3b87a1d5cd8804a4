"""Prometheus metrics of the pipeline's state, read from Postgres and Redis at each scrape.

:class:`PipelineCollector` is a ``prometheus_client`` custom collector: nothing is kept in memory
between scrapes; each scrape runs a few aggregate queries (one transaction) and one Redis
pipeline of ``LLEN``. The API exposes it at ``GET /metrics``; workers do not (N workers would
repeat the same queries), they expose their own task metrics (``workers/metrics.py``).

Metrics (units in the names: ``_usd`` US dollars, ``_seconds`` seconds, ``_tokens`` tokens):

- ``patterns_database_up`` / ``patterns_broker_up``: 1 when the scrape could read Postgres / Redis.
  ``patterns_broker_up`` is absent when no ``REDIS_URL`` is configured (eager mode).
- ``celery_queue_length{queue_name}``: messages waiting in each Celery queue (Redis ``LLEN``); the
  name and label follow danihodovic/celery-exporter so its dashboards and alerts apply.
- ``patterns_interactions{status}``: interactions per outbox status (every status, zeros included).
- ``patterns_extraction_failures{reason}``: ``failed`` and ``dead`` interactions per ``last_error``
  (the 20 most frequent reasons, each cut to 120 characters, to bound the label's cardinality).
- ``patterns_llm_calls_total{provider,model,outcome}``, ``patterns_llm_tokens_total{provider,model,
  kind}`` (kind ``input|output|cache_read|cache_write``), ``patterns_llm_cost_usd_total{provider,
  model}``: totals over ``llm_calls`` (counters: they only grow while rows are kept); requests
  answered from the response cache reached no model and are not in them.
- ``patterns_response_cache_hits_total{provider,model}``: requests answered from the exact
  response cache (:mod:`pipeline.extract.cache`) instead of the model;
  ``patterns_response_cache_hit_ratio{provider,model}``: ``hits / (hits + model calls)``, model
  calls not counting deferred ones; absent for a model with neither.
- ``patterns_llm_cache_hit_ratio{provider,model}``: ``cache_read / (tokens_in + cache_read +
  cache_write)``, the share of prompt tokens served from the prompt cache (Anthropic reports the
  three kinds separately: ``input_tokens`` excludes cached tokens); absent for models with no
  prompt tokens.
- ``patterns_budget_{cap,spent,reserved,remaining}_usd``: today's (UTC) Claude budget
  (:func:`pipeline.spend.budget.budget_state`).
- ``patterns_pattern_signals_total{model,signal}``, ``patterns_pattern_grounding_ratio{model}``,
  ``patterns_pattern_title_copy_ratio{model}``, ``patterns_interactions_trivial_total``: the
  label-free quality signals (:func:`pipeline.ops.quality.signal_metrics`).
- ``patterns_cross_check_{agreement,samples,alert}{task_type}``: the Claude cross-check's
  agreement over the window (:func:`pipeline.ops.quality.cross_check_metrics`).

A scrape never raises: a database error gives ``patterns_database_up 0`` and no database metrics,
a Redis error ``patterns_broker_up 0`` and no queue lengths.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.status import CallOutcome, InteractionStatus
from pipeline.errors import DatabaseUnavailableError
from pipeline.ops.quality import (
    QualitySignals,
    cross_check_metrics,
    read_signals,
    signal_metrics,
)
from pipeline.ops.stats import cache_hit_rate
from pipeline.quality.agreement import Agreement, measured_agreement
from pipeline.queues import QUEUES
from pipeline.settings import Settings
from pipeline.spend.budget import BudgetState, budget_state

log = structlog.get_logger(__name__)

#: Most failure reasons reported (the rest are left out).
MAX_FAILURE_REASONS = 20
#: Longest ``reason`` label value, in characters.
MAX_REASON_CHARS = 120
#: Seconds a scrape waits for Redis before reporting it down.
REDIS_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class LLMTotals:
    """Totals of ``llm_calls`` rows of one provider, model and outcome."""

    provider: str
    model: str
    outcome: str
    calls: int
    tokens_in: int
    tokens_out: int
    cache_read: int
    cache_write: int
    cost_usd: Decimal
    cache_hit: bool = False


@dataclass(frozen=True)
class DatabaseReading:
    """What one scrape read from Postgres."""

    interactions: dict[str, int]
    failures: list[tuple[str, int]]
    llm: list[LLMTotals]
    budget: BudgetState
    signals: QualitySignals
    cross_checks: list[Agreement]


def read_database(db: Database, settings: Settings) -> DatabaseReading:
    """Read the scrape's figures in one transaction (seven aggregate queries).

    Raises:
        DatabaseUnavailableError / sqlalchemy.exc.SQLAlchemyError: the database cannot be read.
    """
    with db.session(ALL_PROJECTS) as session:
        by_status = {status.value: 0 for status in InteractionStatus}
        for row in session.execute(
            text("SELECT status, count(*) FROM interactions GROUP BY status")
        ):
            by_status[str(row[0])] = int(row[1])
        failures = [
            (str(row[0]), int(row[1]))
            for row in session.execute(
                text(
                    "SELECT left(coalesce(last_error, ''), :chars) AS reason, count(*) "
                    "FROM interactions WHERE status IN ('failed', 'dead') "
                    "GROUP BY reason ORDER BY count(*) DESC, reason LIMIT :n"
                ),
                {"chars": MAX_REASON_CHARS, "n": MAX_FAILURE_REASONS},
            )
        ]
        llm = [
            LLMTotals(
                provider=str(row[0]),
                model=str(row[1]),
                outcome=str(row[2]),
                calls=int(row[3]),
                tokens_in=int(row[4]),
                tokens_out=int(row[5]),
                cache_read=int(row[6]),
                cache_write=int(row[7]),
                cost_usd=Decimal(row[8]),
                cache_hit=bool(row[9]),
            )
            for row in session.execute(
                text(
                    "SELECT provider, model, outcome, count(*), coalesce(sum(tokens_in), 0), "
                    "coalesce(sum(tokens_out), 0), coalesce(sum(cache_read_tokens), 0), "
                    "coalesce(sum(cache_write_tokens), 0), coalesce(sum(cost_usd), 0), cache_hit "
                    "FROM llm_calls GROUP BY provider, model, outcome, cache_hit "
                    "ORDER BY provider, model, outcome, cache_hit"
                )
            )
        ]
        budget = budget_state(session, settings=settings)
        signals = read_signals(session)
        checks = list(measured_agreement(session, settings).values())
    return DatabaseReading(
        interactions=by_status, failures=failures, llm=llm, budget=budget, signals=signals,
        cross_checks=checks,
    )  # fmt: skip


def read_queue_lengths(redis_url: str, queues: Sequence[str]) -> dict[str, int]:
    """``LLEN`` of each queue on the broker, in one round trip.

    Raises:
        redis.RedisError: Redis cannot be reached or answered with an error.
    """
    import redis

    client = redis.Redis.from_url(
        redis_url, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
    )
    try:
        pipe = client.pipeline(transaction=False)
        for queue in queues:
            pipe.llen(queue)
        lengths = pipe.execute()
    finally:
        client.close()
    return {queue: int(n) for queue, n in zip(queues, lengths, strict=True)}


class PipelineCollector(Collector):
    """Collects the pipeline's metrics from ``db`` and the broker at ``redis_url`` (``None``: no
    broker, no queue metrics) on each scrape. See the module docstring for the metric list."""

    def __init__(self, db: Database, settings: Settings, redis_url: str | None) -> None:
        self.db = db
        self.settings = settings
        self.redis_url = redis_url

    def describe(self) -> Iterator[Metric]:
        """Nothing: registering must not run the queries (names are not checked for clashes)."""
        return iter(())

    def collect(self) -> Iterator[Metric]:
        """The metrics of one scrape; never raises on a database or broker outage."""
        yield from self._broker_metrics()
        yield from self._database_metrics()

    def _broker_metrics(self) -> Iterator[Metric]:
        if self.redis_url is None:
            return
        import redis

        up = GaugeMetricFamily(
            "patterns_broker_up", "1 when the Celery broker (Redis) answered this scrape, else 0."
        )
        try:
            lengths = read_queue_lengths(self.redis_url, QUEUES)
        except redis.RedisError as exc:
            log.warning("metrics_broker_unavailable", error=str(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        queue = GaugeMetricFamily(
            "celery_queue_length",
            "Messages waiting in a Celery queue (Redis LLEN).",
            labels=["queue_name"],
        )
        for name, length in lengths.items():
            queue.add_metric([name], length)
        yield queue

    def _database_metrics(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "patterns_database_up", "1 when Postgres answered this scrape's queries, else 0."
        )
        try:
            reading = read_database(self.db, self.settings)
        except (SQLAlchemyError, DatabaseUnavailableError) as exc:
            log.warning("metrics_database_unavailable", error=str(exc))
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        interactions = GaugeMetricFamily(
            "patterns_interactions", "Interactions per outbox status.", labels=["status"]
        )
        for status, count in reading.interactions.items():
            interactions.add_metric([status], count)
        yield interactions

        failures = GaugeMetricFamily(
            "patterns_extraction_failures",
            f"Failed and dead interactions per last_error (top {MAX_FAILURE_REASONS} reasons, "
            f"cut to {MAX_REASON_CHARS} characters).",
            labels=["reason"],
        )
        for reason, count in reading.failures:
            failures.add_metric([reason], count)
        yield failures

        yield from _llm_metrics([row for row in reading.llm if not row.cache_hit])
        yield from _response_cache_metrics(reading.llm)
        yield from _budget_metrics(reading.budget)
        yield from signal_metrics(reading.signals)
        yield from cross_check_metrics(reading.cross_checks, self.settings)


def _llm_metrics(rows: Sequence[LLMTotals]) -> Iterator[Metric]:
    """Calls, tokens, dollars and the prompt-cache hit ratio per provider and model."""
    pm = ["provider", "model"]
    calls = CounterMetricFamily(
        "patterns_llm_calls_total",
        "Model requests recorded in llm_calls, by outcome (ok|invalid|truncated|error).",
        labels=[*pm, "outcome"],
    )
    tokens = CounterMetricFamily(
        "patterns_llm_tokens_total",
        "Tokens of recorded model requests; kind input (uncached prompt), output, cache_read "
        "or cache_write.",
        labels=[*pm, "kind"],
    )
    cost = CounterMetricFamily(
        "patterns_llm_cost_usd_total",
        "Cost of recorded model requests, in USD.",
        labels=pm,
    )
    ratio = GaugeMetricFamily(
        "patterns_llm_cache_hit_ratio",
        "Share of prompt tokens read from the prompt cache: cache_read / (input + cache_read "
        "+ cache_write), 0 to 1.",
        labels=pm,
    )
    per_model: dict[tuple[str, str], list[int]] = {}
    usd: dict[tuple[str, str], Decimal] = {}
    for row in rows:
        key = (row.provider, row.model)
        calls.add_metric([*key, row.outcome], row.calls)
        acc = per_model.setdefault(key, [0, 0, 0, 0])
        for i, value in enumerate((row.tokens_in, row.tokens_out, row.cache_read, row.cache_write)):
            acc[i] += value
        usd[key] = usd.get(key, Decimal(0)) + row.cost_usd
    for key, (t_in, t_out, c_read, c_write) in per_model.items():
        for kind, value in (
            ("input", t_in),
            ("output", t_out),
            ("cache_read", c_read),
            ("cache_write", c_write),
        ):
            tokens.add_metric([*key, kind], value)
        cost.add_metric([*key], float(usd[key]))
        prompt = t_in + c_read + c_write
        if prompt > 0:
            ratio.add_metric([*key], c_read / prompt)
    yield calls
    yield tokens
    yield cost
    yield ratio


def _response_cache_metrics(rows: Sequence[LLMTotals]) -> Iterator[Metric]:
    """Response cache hits and hit ratio per provider and model (see the module docstring)."""
    pm = ["provider", "model"]
    hits = CounterMetricFamily(
        "patterns_response_cache_hits_total",
        "Requests answered from the exact response cache, with no model call.",
        labels=pm,
    )
    ratio = GaugeMetricFamily(
        "patterns_response_cache_hit_ratio",
        "Response cache hits / (hits + model calls), 0 to 1 (deferred requests are not calls).",
        labels=pm,
    )
    counts: dict[tuple[str, str], list[int]] = {}
    for row in rows:
        if row.outcome == CallOutcome.DEFERRED and not row.cache_hit:
            continue
        acc = counts.setdefault((row.provider, row.model), [0, 0])
        acc[0 if row.cache_hit else 1] += row.calls
    for key, (n_hits, n_calls) in counts.items():
        hits.add_metric([*key], n_hits)
        rate = cache_hit_rate(n_hits, n_calls)
        if rate is not None:
            ratio.add_metric([*key], rate)
    yield hits
    yield ratio


def _budget_metrics(budget: BudgetState) -> Iterator[Metric]:
    """Today's Claude budget: cap, spent, reserved and remaining, in USD."""
    for name, amount, what in (
        ("cap", budget.cap_usd, "Today's (UTC) Claude spend cap for normal calls, in USD."),
        ("spent", budget.spent_usd, "Claude spend settled today (UTC), in USD."),
        (
            "reserved",
            budget.reserved_usd,
            "Claude budget reserved today (UTC) by calls not yet settled, in USD.",
        ),
        (
            "remaining",
            budget.remaining_usd,
            "What normal Claude calls may still reserve today: max(0, cap - spent - "
            "reserved), in USD.",
        ),
    ):
        gauge = GaugeMetricFamily(f"patterns_budget_{name}_usd", what)
        gauge.add_metric([], float(amount))
        yield gauge
