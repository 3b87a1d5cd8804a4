"""The Claude cross-check's read side: measured agreement between the local model and Claude
per task type over a window (:func:`measured_agreement`), and the local capability scores
routing uses (:func:`effective_capability`): the measured agreement where there are
``quality_min_samples`` cross-checked patterns in the window, the static
``local_capability`` setting (the mission's defaults) before.

A cross-check writes one ``pattern_validations`` row of type ``cross_check`` per local pattern
(:mod:`pipeline.quality.crosscheck`): ``confirmed`` when Claude gave a matching pattern,
``uncertain`` when it did not; ``evidence.task_type`` names the work checked. Agreement is
confirmed / (confirmed + uncertain).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from pipeline.db.models import PatternValidation
from pipeline.db.status import ValidationResult, ValidationType
from pipeline.settings import Settings
from pipeline.types import TaskType


class Agreement(BaseModel):
    """One task type's cross-checks in the window."""

    task_type: TaskType
    samples: int = Field(description="Cross-checked local patterns.")
    agreed: int = Field(description="Of them, matched by a pattern of Claude's.")
    rate: float = Field(description="agreed / samples, 0-1.")
    in_use: bool = Field(description="samples >= quality_min_samples: routing uses the rate.")
    alert: bool = Field(description="In use and under quality_alert_agreement.")


def measured_agreement(
    session: Session, settings: Settings, now: dt.datetime | None = None
) -> dict[TaskType, Agreement]:
    """Agreement per task type over the last ``quality_window_days`` (to ``now``, default the
    database's clock), for task types with at least one cross-check."""
    task = PatternValidation.evidence["task_type"].astext
    window = dt.timedelta(days=settings.quality_window_days)
    since: Any = func.now() - window if now is None else now - window
    rows: Sequence[Any] = session.execute(
        select(
            task,
            func.count(),
            func.count().filter(PatternValidation.result == ValidationResult.CONFIRMED.value),
        )
        .where(
            PatternValidation.validation_type == ValidationType.CROSS_CHECK.value,
            PatternValidation.created_at >= since,
        )
        .group_by(task)
    ).all()
    out: dict[TaskType, Agreement] = {}
    for name, n, n_agreed in rows:
        if name not in TaskType._value2member_map_:
            continue
        samples, agreed = int(n), int(n_agreed)
        rate = agreed / samples
        in_use = samples >= settings.quality_min_samples
        out[TaskType(str(name))] = Agreement(
            task_type=TaskType(str(name)), samples=samples, agreed=agreed, rate=rate, in_use=in_use,
            alert=in_use and rate < settings.quality_alert_agreement,
        )  # fmt: skip
    return out


def effective_capability(
    settings: Settings, agreements: Mapping[TaskType, Agreement]
) -> dict[TaskType, float]:
    """``settings.local_capability`` with each task type's measured agreement in place of the
    static score where it is :attr:`Agreement.in_use`."""
    capability = dict(settings.local_capability)
    for task_type, agreement in agreements.items():
        if agreement.in_use:
            capability[task_type] = round(agreement.rate, 3)
    return capability


def with_measured_capability(session: Session, settings: Settings) -> Settings:
    """``settings`` whose ``local_capability`` is :func:`effective_capability` (the same object
    when no measurement is in use), for :func:`pipeline.spend.routing.route`."""
    agreements = measured_agreement(session, settings)
    if not any(a.in_use for a in agreements.values()):
        return settings
    return settings.model_copy(
        update={"local_capability": effective_capability(settings, agreements)}
    )
