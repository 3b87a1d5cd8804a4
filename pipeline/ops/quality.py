"""Extraction quality from the database, for ``patterns report`` and ``/metrics``: the
label-free signals stored on every pattern (:mod:`pipeline.quality.signals`: evidence
grounding, title copying) and the trivial verdicts (:func:`read_signals`, over a window for the
report, all time for the metrics: Prometheus takes rates of the counters), and the Claude
cross-check's agreement per task type with its alert (:func:`read_cross_checks`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.db.models import Interaction, Pattern
from pipeline.db.status import InteractionStatus
from pipeline.quality.agreement import Agreement, measured_agreement
from pipeline.settings import Settings

log = structlog.get_logger(__name__)


class ModelSignals(BaseModel):
    """The signals of the patterns one model extracted (patterns from before migration 0009,
    which have none, are left out)."""

    model: str
    patterns: int = Field(description="Patterns with signals measured.")
    grounded: int = Field(description="Of them, evidence found in the interaction's text.")
    title_copies: int = Field(description="Of them, title restating the interaction's title.")

    @property
    def grounding_rate(self) -> float | None:
        """grounded / patterns (None when no pattern)."""
        return self.grounded / self.patterns if self.patterns else None

    @property
    def title_copy_rate(self) -> float | None:
        """title_copies / patterns (None when no pattern)."""
        return self.title_copies / self.patterns if self.patterns else None


class QualitySignals(BaseModel):
    """Label-free quality over a window: per extraction model, and the trivial verdicts among
    extracted interactions."""

    by_model: list[ModelSignals]
    grounding_rate: float | None = Field(description="Over every model; null if no pattern.")
    title_copy_rate: float | None = Field(description="Over every model; null if no pattern.")
    extracted: int
    skipped_trivial: int = Field(description="Extracted interactions the model called trivial.")


def _signal_rows(session: Session, *where: object) -> list[ModelSignals]:
    model = func.coalesce(Pattern.extraction_model, "unknown")
    rows = session.execute(
        select(
            model,
            func.count(),
            func.count().filter(Pattern.evidence_grounded.is_(True)),
            func.count().filter(Pattern.title_copy.is_(True)),
        )
        .where(Pattern.evidence_grounded.is_not(None), *where)  # type: ignore[arg-type]
        .group_by(model)
        .order_by(model)
    ).all()
    return [ModelSignals(model=m, patterns=n, grounded=g, title_copies=c) for m, n, g, c in rows]


def _trivial(session: Session, *where: object) -> tuple[int, int]:
    extracted, trivial = session.execute(
        select(func.count(), func.count().filter(Interaction.trivial)).where(
            Interaction.status == InteractionStatus.EXTRACTED.value,
            *where,  # type: ignore[arg-type]
        )
    ).one()
    return int(extracted), int(trivial)


def _between(column: Any, start: dt.datetime | None, stop: dt.datetime | None) -> list[Any]:
    """Conditions ``start <= column < stop``, each bound left out when ``None``."""
    out = []
    if start is not None:
        out.append(column >= start)
    if stop is not None:
        out.append(column < stop)
    return out


def read_signals(
    session: Session, start: dt.datetime | None = None, stop: dt.datetime | None = None
) -> QualitySignals:
    """The signals of patterns created in ``[start, stop)`` and the trivial verdicts of
    interactions processed in it (``None``: unbounded)."""
    made = _between(Pattern.created_at, start, stop)
    done = _between(Interaction.processed_at, start, stop)
    rows = _signal_rows(session, *made)
    extracted, trivial = _trivial(session, *done)
    total = sum(r.patterns for r in rows)
    return QualitySignals(
        by_model=rows,
        grounding_rate=sum(r.grounded for r in rows) / total if total else None,
        title_copy_rate=sum(r.title_copies for r in rows) / total if total else None,
        extracted=extracted,
        skipped_trivial=trivial,
    )


def signal_metrics(signals: QualitySignals) -> Iterator[Metric]:
    """Prometheus metrics of all-time signals (see :mod:`pipeline.ops.metrics`):

    - ``patterns_pattern_signals_total{model,signal}``: patterns measured (``signal="measured"``),
      with grounded evidence (``grounded``), with a copied title (``title_copy``); alert on
      ``rate(..{signal="grounded"}[1h]) / rate(..{signal="measured"}[1h])``.
    - ``patterns_pattern_grounding_ratio{model}``, ``patterns_pattern_title_copy_ratio{model}``:
      the all-time shares, 0 to 1 (absent for a model with no measured pattern).
    - ``patterns_interactions_trivial_total``: extracted interactions the model called trivial.
    """
    counts = CounterMetricFamily(
        "patterns_pattern_signals_total",
        "Extracted patterns with label-free signals: measured, grounded (evidence found in the "
        "interaction's text), title_copy (title restating the interaction's title).",
        labels=["model", "signal"],
    )
    grounding = GaugeMetricFamily(
        "patterns_pattern_grounding_ratio",
        "Share of measured patterns whose evidence is found in their interaction's text.",
        labels=["model"],
    )
    copying = GaugeMetricFamily(
        "patterns_pattern_title_copy_ratio",
        "Share of measured patterns whose title restates their interaction's title.",
        labels=["model"],
    )
    for row in signals.by_model:
        for name, value in (("measured", row.patterns), ("grounded", row.grounded),
                            ("title_copy", row.title_copies)):  # fmt: skip
            counts.add_metric([row.model, name], value)
        if row.grounding_rate is not None and row.title_copy_rate is not None:
            grounding.add_metric([row.model], row.grounding_rate)
            copying.add_metric([row.model], row.title_copy_rate)
    trivial = CounterMetricFamily(
        "patterns_interactions_trivial_total",
        "Extracted interactions the model called trivial (no reusable lesson, no patterns).",
    )
    trivial.add_metric([], signals.skipped_trivial)
    yield from (counts, grounding, copying, trivial)


def format_rate(value: float | None) -> str:
    """A share for people: ``"12.5%"``, or ``"-"`` when there is none."""
    return "-" if value is None else f"{value:.1%}"


def signal_lines(signals: QualitySignals) -> Sequence[tuple[str, str]]:
    """``(label, value)`` rows of the report's table of signals."""
    rows = [
        ("grounding rate", format_rate(signals.grounding_rate)),
        ("title copy rate", format_rate(signals.title_copy_rate)),
        ("skipped trivial", f"{signals.skipped_trivial} of {signals.extracted} extracted"),
    ]
    for m in signals.by_model:
        grounded, copied = format_rate(m.grounding_rate), format_rate(m.title_copy_rate)
        rows.append(
            (f"  {m.model}", f"{m.patterns} patterns, grounded {grounded}, title copy {copied}")
        )
    return rows


def read_cross_checks(session: Session, settings: Settings) -> list[Agreement]:
    """Cross-check agreement per task type over ``quality_window_days``
    (:func:`pipeline.quality.agreement.measured_agreement`), by task type; each one in use and
    under ``quality_alert_agreement`` is logged as a warning (``cross_check_agreement_low``)."""
    agreements = sorted(measured_agreement(session, settings).values(), key=lambda a: a.task_type)
    for a in agreements:
        if a.alert:
            log.warning(
                "cross_check_agreement_low", task_type=a.task_type.value,
                agreement=round(a.rate, 3), samples=a.samples,
                threshold=settings.quality_alert_agreement,
            )  # fmt: skip
    return agreements


def cross_check_metrics(agreements: Sequence[Agreement], settings: Settings) -> Iterator[Metric]:
    """``patterns_cross_check_agreement{task_type}`` (0-1), ``patterns_cross_check_samples
    {task_type}`` (cross-checked patterns in the window) and ``patterns_cross_check_alert
    {task_type}`` (1 when the agreement is in use and under ``quality_alert_agreement``)."""
    rate = GaugeMetricFamily(
        "patterns_cross_check_agreement",
        f"Local/Claude agreement on cross-checked patterns over {settings.quality_window_days:g} "
        "days, 0 to 1.",
        labels=["task_type"],
    )
    samples = GaugeMetricFamily(
        "patterns_cross_check_samples",
        "Cross-checked patterns in the window.",
        labels=["task_type"],
    )
    alert = GaugeMetricFamily(
        "patterns_cross_check_alert",
        f"1 when the measured agreement is in use and under {settings.quality_alert_agreement}.",
        labels=["task_type"],
    )
    for a in agreements:
        rate.add_metric([a.task_type.value], a.rate)
        samples.add_metric([a.task_type.value], a.samples)
        alert.add_metric([a.task_type.value], 1 if a.alert else 0)
    yield from (rate, samples, alert)
