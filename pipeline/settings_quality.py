"""Settings of the extraction-quality cross-check: which share of local extractions Claude
extracts again, and when the measured agreement takes over from the static local capability
score in routing (:mod:`pipeline.quality.crosscheck`).

:class:`QualitySettings` is a base of :class:`pipeline.settings.Settings` (one object, read
from the environment once at the entry point); it holds fields only, no configuration of its own.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings


class QualitySettings(BaseSettings):
    """Cross-check settings (``PATTERNS_<FIELD NAME>``); see :class:`pipeline.settings.Settings`."""

    quality_sample_rate: float = Field(
        default=0.05,
        ge=0,
        le=1,
        description="Share of local extractions (with patterns) that Claude extracts again to "
        "measure agreement, chosen by a hash of the interaction id (the same ones on every "
        "run). Claude's calls reserve against the daily budget like any other and are skipped "
        "when it cannot admit them. 0 turns the cross-check off; nothing is sent without "
        "ANTHROPIC_API_KEY.",
    )
    quality_min_samples: int = Field(
        default=30,
        ge=1,
        description="Cross-checked patterns of a task type, within quality_window_days, from "
        "which their measured agreement replaces the static local_capability score in routing.",
    )
    quality_window_days: float = Field(
        default=7.0, gt=0, description="Window of cross-checks that measured agreement covers."
    )
    quality_alert_agreement: float = Field(
        default=0.7,
        ge=0,
        le=1,
        description="Measured agreement under which patterns report and /metrics alert "
        "(a warning log line, patterns_cross_check_alert 1).",
    )
