"""Claude through the ``anthropic`` SDK, under the day's budget: :class:`ClaudeEngine` (Messages
API, one request per call, several in flight); :mod:`pipeline.llm.claude_batch` has the Message
Batches engine (half price, for bulk runs that can wait).

Both implement :class:`~pipeline.llm.base.StructuredLLM`, so extraction and strategic analysis use
them exactly as they use vLLM. Every request:

1. is counted (``POST /v1/messages/count_tokens``);
2. reserves its worst-case cost, counted input + ``max_tokens`` at the model's price
   (:func:`pipeline.spend.pricing.worst_case_usd`), against the day's budget in one atomic statement
   (:func:`pipeline.spend.reservations.reserve`); a refused reservation comes back ``deferred``;
3. is sent; the SDK retries 408/409/429/5xx/529 up to ``claude_max_retries`` times, waiting as
   ``retry-after`` says; meanwhile a heartbeat renews the reservation's lease
   (:func:`pipeline.spend.leases.heartbeat`), so the sweep never frees the money of a live call;
4. settles the real cost from ``usage`` (cache writes and reads priced as such), or releases the
   reservation if nothing was generated.

Structured output: ``output_config.format`` with the request's JSON schema, adapted by the SDK's
``transform_schema`` (constraints the API does not enforce, such as string lengths, move into the
description); the text is then validated with the same pydantic model as local output.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import structlog

from pipeline.db.engine import Database
from pipeline.db.status import CallOutcome
from pipeline.errors import ConfigurationError
from pipeline.llm.base import Generation, GenerationRequest
from pipeline.settings import Settings
from pipeline.spend import leases, pricing, reservations
from pipeline.types import Provider

log = structlog.get_logger(__name__)

#: HTTP statuses after which the request is not sent again here but handed to another engine:
#: 401/403 (a key problem must not fail the work itself), 408/409/429/5xx/529 once the SDK's own
#: retries are spent.
_DEFER_STATUSES = frozenset({401, 403, 408, 409, 429})


def build_client(settings: Settings) -> Any:
    """An ``anthropic.Anthropic`` client from ``ANTHROPIC_API_KEY`` / ``ANTHROPIC_BASE_URL``.

    Raises:
        ConfigurationError: ``ANTHROPIC_API_KEY`` is not set.
    """
    import anthropic

    if settings.anthropic_api_key is None:
        raise ConfigurationError("ANTHROPIC_API_KEY is not set: Claude cannot be used")
    return anthropic.Anthropic(
        api_key=settings.anthropic_api_key.get_secret_value(),
        base_url=settings.anthropic_base_url or None,
        max_retries=settings.claude_max_retries,
        timeout=settings.claude_timeout_s,
    )


def message_params(request: GenerationRequest, *, model: str, max_tokens: int) -> dict[str, Any]:
    """Messages API parameters for one request.

    The system prompt becomes a cached block (``cache_control: ephemeral``): it and the schema
    are the same for every request of a task type, so later calls read them from the prompt
    cache. No ``temperature``: current models reject non-default sampling parameters.
    """
    import anthropic

    system = [m["content"] for m in request.messages if m["role"] == "system"]
    params: dict[str, Any] = {
        "model": model,
        "max_tokens": max_tokens,
        "messages": [
            {"role": m["role"], "content": m["content"]}
            for m in request.messages
            if m["role"] != "system"
        ],
        "output_config": {
            "format": {
                "type": "json_schema",
                "schema": anthropic.transform_schema(request.json_schema),
            }
        },
    }
    if system:
        params["system"] = [
            {"type": "text", "text": "\n\n".join(system), "cache_control": {"type": "ephemeral"}}
        ]
    return params


def _usage(usage: Any) -> pricing.TokenUsage:
    """:class:`pricing.TokenUsage` from an SDK ``Usage`` (5-minute and 1-hour writes split when
    the API says which)."""
    writes = int(getattr(usage, "cache_creation_input_tokens", 0) or 0)
    writes_1h = 0
    detail = getattr(usage, "cache_creation", None)
    if detail is not None:
        writes_1h = int(getattr(detail, "ephemeral_1h_input_tokens", 0) or 0)
    return pricing.TokenUsage(
        input_tokens=int(usage.input_tokens or 0),
        output_tokens=int(usage.output_tokens or 0),
        cache_write_tokens=max(0, writes - writes_1h),
        cache_read_tokens=int(getattr(usage, "cache_read_input_tokens", 0) or 0),
        cache_write_1h_tokens=writes_1h,
    )


def _text(message: Any) -> str:
    return "".join(getattr(block, "text", "") for block in message.content)


def _finish(stop_reason: str | None) -> str:
    return "length" if stop_reason == "max_tokens" else "stop"


@dataclass(frozen=True)
class Admitted:
    """A request the budget admitted: its reservation and the Messages API parameters."""

    reservation: reservations.Reservation
    params: dict[str, Any]


@dataclass(frozen=True)
class Refusal:
    """Why a request was not sent (its tokens could not be counted, or the budget refused it);
    the request comes back ``deferred`` with this reason."""

    reason: str


class Budgeted:
    """What both engines share: counting, reserving, settling."""

    provider = Provider.CLAUDE

    def __init__(self, *, client: Any, db: Database, settings: Settings, batch: bool) -> None:
        self._client = client
        self._db = db
        self._settings = settings
        self._batch = batch
        self.model_name = settings.claude_model
        pricing.price_for(self.model_name)  # an unknown model fails here, not mid-run

    def _params(self, request: GenerationRequest) -> dict[str, Any]:
        max_tokens = min(request.max_tokens, self._settings.claude_max_tokens)
        return message_params(request, model=self.model_name, max_tokens=max_tokens)

    def _count(self, params: dict[str, Any]) -> int | Refusal:
        """Input tokens of a request (``count_tokens``), or why they could not be counted."""
        import anthropic

        counted = {k: v for k, v in params.items() if k != "max_tokens"}
        try:
            return int(self._client.messages.count_tokens(**counted).input_tokens)
        except anthropic.APIStatusError as exc:
            return Refusal(f"token counting failed: HTTP {exc.status_code}")
        except anthropic.APIConnectionError as exc:
            return Refusal(f"token counting failed: {exc}")

    def _reserve(
        self, request: GenerationRequest, params: dict[str, Any], tokens: int
    ) -> Admitted | Refusal:
        """Reserve the worst case of a counted request, or say why the budget refused it."""
        # message_params marks the system prompt with a 5-minute ephemeral cache_control.
        amount = pricing.worst_case_usd(
            self.model_name, tokens, int(params["max_tokens"]), batch=self._batch,
            cache_ttl="5m",
        )  # fmt: skip
        priority = request.priority
        reservation = reservations.reserve(
            self._db,
            settings=self._settings,
            model=self.model_name,
            amount_usd=amount,
            task_type=request.task_type or "unknown",
            priority=priority,
            interaction_id=request.interaction_id,
        )
        if reservation is None:
            return Refusal(
                f"the {priority.value} budget cannot admit ${amount} "
                f"({tokens} input tokens + {params['max_tokens']} max_tokens)"
            )
        return Admitted(reservation, params)

    def _settle(self, admitted: Admitted, message: Any, latency_ms: int) -> Generation:
        generation = self._generation(message, latency_ms)
        reservations.settle(self._db, admitted.reservation.id, generation.cost_usd)
        return generation

    def _generation(self, message: Any, latency_ms: int) -> Generation:
        """The :class:`Generation` of an answered request, priced from its ``usage``."""
        usage = _usage(message.usage)
        cost = pricing.cost_usd(self.model_name, usage, batch=self._batch)
        return Generation(
            text=_text(message),
            finish_reason=_finish(message.stop_reason),
            tokens_in=usage.input_tokens,
            tokens_out=usage.output_tokens,
            cache_read_tokens=usage.cache_read_tokens,
            cache_write_tokens=usage.cache_write_tokens + usage.cache_write_1h_tokens,
            cost_usd=cost,
            latency_ms=latency_ms,
        )


def deferred(reason: str) -> Generation:
    """The :class:`Generation` of a request that was not sent here (``finish_reason``
    ``deferred``): another engine may take it."""
    return Generation(
        text="", finish_reason=CallOutcome.DEFERRED.value, tokens_in=0, tokens_out=0, error=reason
    )


class ClaudeEngine(Budgeted):
    """Claude over the Messages API, ``claude_concurrency`` requests in flight.

    Attributes:
        provider: ``"claude"``.
        model_name: ``settings.claude_model``.
    """

    def __init__(self, *, client: Any, db: Database, settings: Settings) -> None:
        super().__init__(client=client, db=db, settings=settings, batch=False)

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> ClaudeEngine:
        """Build with :func:`build_client`.

        Raises:
            ConfigurationError: no API key, or a model missing from the price table.
        """
        return cls(client=build_client(settings), db=db, settings=settings)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One output per request, same order; never raises for one request's failure.

        A request the budget refuses, or that stays rate-limited/overloaded through the SDK's
        retries, comes back ``deferred``; a request the API rejects as invalid (400, 404, 413,
        422) comes back ``error`` with the API's message.
        """
        if not requests:
            return []
        workers = min(self._settings.claude_concurrency, len(requests))
        with (
            leases.Heartbeat(self._db, self._settings.budget_lease_s) as beat,
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="claude") as pool,
        ):
            return list(pool.map(lambda request: self._one(request, beat), requests))

    def _one(self, request: GenerationRequest, beat: leases.Heartbeat) -> Generation:
        import anthropic

        params = self._params(request)
        tokens = self._count(params)
        if isinstance(tokens, Refusal):
            return deferred(tokens.reason)
        admitted = self._reserve(request, params, tokens)
        if isinstance(admitted, Refusal):
            return deferred(admitted.reason)
        started = time.perf_counter()
        beat.hold(admitted.reservation.id)
        try:
            message = self._client.messages.create(**admitted.params)
        except anthropic.APIStatusError as exc:
            reservations.release(self._db, admitted.reservation.id, f"HTTP {exc.status_code}")
            reason = f"Claude answered HTTP {exc.status_code}: {exc.message}"
            if exc.status_code in _DEFER_STATUSES or exc.status_code >= 500:
                return deferred(reason)
            return Generation(text="", finish_reason="error", tokens_in=0, tokens_out=0,
                              error=reason)  # fmt: skip
        except anthropic.APIConnectionError as exc:
            reservations.release(self._db, admitted.reservation.id, "connection error")
            return deferred(f"Claude unreachable: {exc}")
        except ValueError as exc:  # the SDK raises json.JSONDecodeError on a non-JSON body
            reservations.release(self._db, admitted.reservation.id, "unreadable response")
            return deferred(f"Claude's response was not JSON: {exc}")
        except BaseException:
            reservations.release(self._db, admitted.reservation.id, "interrupted")
            raise
        finally:
            beat.drop(admitted.reservation.id)
        return self._settle(admitted, message, int((time.perf_counter() - started) * 1000))
