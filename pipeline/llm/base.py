"""The boundary every extraction engine implements: many structured requests in, one call."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from pipeline.types import Priority, Provider, TaskType


@dataclass(frozen=True)
class GenerationRequest:
    """One prompt: chat ``messages``, the JSON schema its output must follow, and sampling.

    ``temperature`` 0 is greedy decoding; ``seed`` makes sampled decoding repeatable (engines
    that cannot honour them, such as Claude, ignore both). ``task_type``, ``interaction_id`` and
    ``priority`` describe the work for budget reservations and ``llm_calls``.
    """

    messages: list[dict[str, str]]
    json_schema: dict[str, Any]
    max_tokens: int
    temperature: float = 0.0
    seed: int | None = None
    task_type: TaskType | None = None
    interaction_id: int | None = None
    priority: Priority = Priority.NORMAL


@dataclass(frozen=True)
class Generation:
    """One output.

    ``finish_reason`` is ``stop``, ``length`` (hit ``max_tokens``), ``error`` (not generated and
    never will be: ``error`` says why, e.g. the prompt does not fit the context) or ``deferred``
    (not generated here, but another engine may: the day's budget could not admit the call, or
    the provider stayed unavailable through its retries; the caller routes the work elsewhere).
    Token counts are the provider's (``tokens_in`` excludes cache reads and writes);
    ``cost_usd`` is the settled price of the call (0 for the local model).
    """

    text: str
    finish_reason: str
    tokens_in: int
    tokens_out: int
    error: str | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    cost_usd: Decimal = Decimal(0)
    latency_ms: int | None = None


class StructuredLLM(Protocol):
    """An engine that answers a list of requests in one batched call, in order."""

    provider: Provider
    model_name: str

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """Generate one output per request, same order.

        Raises:
            RetryableError: the engine is temporarily unavailable (nothing was generated).
            PermanentError: the engine cannot serve these requests at all.
        """
        ...


class LocalEngine(StructuredLLM, Protocol):
    """A local extraction engine (:func:`pipeline.llm.local.local_engine`): one that holds
    processes or connections until it is closed."""

    def close(self) -> None:
        """Release what the engine holds (vLLM's processes, HTTP connections)."""
        ...
