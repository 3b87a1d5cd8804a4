"""Local extraction through any OpenAI-compatible chat-completions server: ``vllm serve``,
Ollama, llama.cpp's ``llama-server`` (bring your own model server).

Each :meth:`OpenAICompatEngine.generate` call sends its requests concurrently (up to
``max_in_flight`` at once, a thread pool over the official ``openai`` SDK), so the server's own
continuous batching sees them together: one request at a time would waste it just as one prompt
per ``generate()`` call wastes vLLM in process. Output is constrained by ``response_format``
``{"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}``, which vLLM's
server, llama.cpp's server and Ollama accept, then validated by the caller like any engine's.

Errors, per request, after the SDK's own retries (``max_retries``, with its backoff and
``retry-after``):
- timeouts, connection errors, 429 and 5xx: transient. When no request of the call got an
  answer, :class:`~pipeline.errors.RetryableError` (the server is down: the task retries); else
  those requests come back ``finish_reason="error"`` with the reason, and the rest are kept.
- 400 and 422: that request comes back ``finish_reason="error"`` with the server's message (a
  prompt too long for the context, a schema the server does not support).
- 401, 403 and 404: :class:`~pipeline.errors.ConfigurationError` (a wrong key, URL or model name
  fails every request alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import openai
import structlog

from pipeline.errors import ConfigurationError, RetryableError
from pipeline.llm.base import Generation, GenerationRequest
from pipeline.settings import Settings
from pipeline.types import Provider

log = structlog.get_logger(__name__)

#: Errors that another try may get past (after the SDK's own retries).
_TRANSIENT = (
    openai.APITimeoutError,
    openai.APIConnectionError,
    openai.RateLimitError,
    openai.InternalServerError,
)
#: Errors that every request would get alike: the engine is misconfigured.
_CONFIGURATION = (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError)


def _response_format(request: GenerationRequest) -> Any:
    """``response_format`` constraining the output to the request's JSON schema, strictly."""
    schema = {"name": "output", "schema": request.json_schema, "strict": True}
    return {"type": "json_schema", "json_schema": schema}


@dataclass(frozen=True)
class _Transient:
    """A request the server could not answer this time, and why."""

    reason: str


class OpenAICompatEngine:
    """A :class:`~pipeline.llm.base.StructuredLLM` over an OpenAI-compatible server.

    Args:
        client: the SDK client (its ``base_url``, key, timeout and retries set).
        model: the model name the server serves (``--served-model-name`` or its path).
        max_in_flight: requests sent at once (the extract batch size, so one task's batch is
            one wave).
    """

    provider = Provider.LOCAL

    def __init__(self, client: openai.OpenAI, model: str, *, max_in_flight: int = 32) -> None:
        if max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be at least 1, not {max_in_flight}")
        self._client = client
        self.model_name = model
        self.max_in_flight = max_in_flight

    @classmethod
    def from_settings(cls, settings: Settings) -> OpenAICompatEngine:
        """The engine of ``PATTERNS_OPENAI_BASE_URL``/``_MODEL``/``_API_KEY``/``_TIMEOUT_S``/
        ``_MAX_RETRIES``, with ``PATTERNS_EXTRACT_BATCH_SIZE`` requests in flight.

        Raises:
            ConfigurationError: no model name is set.
        """
        if not settings.openai_model:
            raise ConfigurationError(
                "PATTERNS_LOCAL_ENGINE=openai needs PATTERNS_OPENAI_MODEL (the served model name)"
            )
        key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else "none"
        client = openai.OpenAI(
            base_url=settings.openai_base_url,
            api_key=key,
            timeout=settings.openai_timeout_s,
            max_retries=settings.openai_max_retries,
        )
        log.info("openai_engine", base_url=settings.openai_base_url, model=settings.openai_model)
        return cls(client, settings.openai_model, max_in_flight=settings.extract_batch_size)

    def close(self) -> None:
        """Close the SDK's HTTP connections."""
        self._client.close()

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One output per request, same order; up to ``max_in_flight`` requests at once.

        Raises:
            RetryableError: no request got an answer, all for transient reasons.
            ConfigurationError: the server refused the key, or does not know the model or path.
        """
        if not requests:
            return []
        workers = min(self.max_in_flight, len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="openai") as pool:
            outcomes = list(pool.map(self._one, requests))
        transient = [o for o in outcomes if isinstance(o, _Transient)]
        if transient and len(transient) == len(outcomes):
            raise RetryableError(
                f"OpenAI-compatible server at {self._client.base_url} unavailable: "
                f"{transient[0].reason}"
            )
        return [
            Generation("", "error", 0, 0, error=o.reason) if isinstance(o, _Transient) else o
            for o in outcomes
        ]

    def _one(self, request: GenerationRequest) -> Generation | _Transient:
        """Send one request; a transient failure comes back as :class:`_Transient`."""
        extra: dict[str, Any] = {} if request.seed is None else {"seed": request.seed}
        try:
            response = self._client.chat.completions.create(
                model=self.model_name,
                messages=request.messages,  # type: ignore[arg-type]
                max_tokens=request.max_tokens,
                temperature=request.temperature,
                response_format=_response_format(request),
                **extra,
            )
        except _CONFIGURATION as exc:
            raise ConfigurationError(
                f"OpenAI-compatible server refused model {self.model_name!r}: {exc}"
            ) from exc
        except _TRANSIENT as exc:
            return _Transient(f"{type(exc).__name__}: {exc}")
        except openai.APIStatusError as exc:  # 400, 422 and the like: this request only
            return Generation("", "error", 0, 0, error=f"server refused the request: {exc}")
        if not response.choices:
            return Generation("", "error", 0, 0, error="server answered with no choices")
        choice = response.choices[0]
        usage = response.usage
        return Generation(
            text=choice.message.content or "",
            finish_reason="length" if choice.finish_reason == "length" else "stop",
            tokens_in=usage.prompt_tokens if usage else 0,
            tokens_out=usage.completion_tokens if usage else 0,
        )
