"""The boundary every extraction engine implements: many structured requests in, one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt: chat ``messages``, the JSON schema its output must follow, and sampling.

    ``temperature`` 0 is greedy decoding; ``seed`` makes sampled decoding repeatable.
    """

    messages: list[dict[str, str]]
    json_schema: dict[str, Any]
    max_tokens: int
    temperature: float = 0.0
    seed: int | None = None


@dataclass(frozen=True)
class Generation:
    """One output. ``finish_reason`` is ``stop``, ``length`` (hit ``max_tokens``) or ``error``
    (not generated: ``error`` says why, e.g. the prompt does not fit the context)."""

    text: str
    finish_reason: str
    tokens_in: int
    tokens_out: int
    error: str | None = None


class StructuredLLM(Protocol):
    """An engine that answers a list of requests in one batched call, in order."""

    provider: str
    model_name: str

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Generate one output per request, same order.

        Raises:
            RetryableError: the engine is temporarily unavailable (nothing was generated).
            PermanentError: the engine cannot serve these requests at all.
        """
        ...
