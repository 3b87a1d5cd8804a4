"""Claude through the ``anthropic`` SDK, under the day's budget: :class:`ClaudeEngine` (Messages
API, one request per call, several in flight) and :class:`ClaudeBatchEngine` (Message Batches API,
half price, for bulk runs that can wait).

Both implement :class:`~pipeline.llm.base.StructuredLLM`, so extraction and strategic analysis use
them exactly as they use vLLM. Every request:

1. is counted (``POST /v1/messages/count_tokens``);
2. reserves its worst-case cost, counted input + ``max_tokens`` at the model's price
   (:func:`pipeline.pricing.worst_case_usd`), against the day's budget in one atomic statement
   (:func:`pipeline.budget.reserve`); a refused reservation comes back ``deferred``;
3. is sent; the SDK retries 408/409/429/5xx/529 up to ``claude_max_retries`` times, waiting as
   ``retry-after`` says;
4. settles the real cost from ``usage`` (cache writes and reads priced as such), or releases the
   reservation if nothing was generated.

Structured output: ``output_config.format`` with the request's JSON schema, adapted by the SDK's
``transform_schema`` (constraints the API does not enforce, such as string lengths, move into the
description); the text is then validated with the same pydantic model as local output.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import structlog

from pipeline import budget, pricing
from pipeline.db.engine import Database
from pipeline.errors import ConfigurationError
from pipeline.llm.base import Generation, GenerationRequest
from pipeline.settings import Settings

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
class _Admitted:
    reservation: budget.Reservation
    params: dict[str, Any]


class _Budgeted:
    """What both engines share: counting, reserving, settling."""

    provider = "claude"

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

    def _count(self, params: dict[str, Any]) -> int | str:
        """Input tokens of a request (``count_tokens``); a string says why they could not be
        counted (the request is then deferred)."""
        import anthropic

        counted = {k: v for k, v in params.items() if k != "max_tokens"}
        try:
            return int(self._client.messages.count_tokens(**counted).input_tokens)
        except anthropic.APIStatusError as exc:
            return f"token counting failed: HTTP {exc.status_code}"
        except anthropic.APIConnectionError as exc:
            return f"token counting failed: {exc}"

    def _reserve(
        self, request: GenerationRequest, params: dict[str, Any], tokens: int
    ) -> _Admitted | str:
        """Reserve the worst case of a counted request; a string says why it was refused."""
        # message_params marks the system prompt with a 5-minute ephemeral cache_control.
        amount = pricing.worst_case_usd(
            self.model_name, tokens, int(params["max_tokens"]), batch=self._batch,
            cache_ttl="5m",
        )  # fmt: skip
        priority = budget.Priority(request.priority)
        reservation = budget.reserve(
            self._db,
            settings=self._settings,
            model=self.model_name,
            amount_usd=amount,
            task_type=request.task_type or "unknown",
            priority=priority,
            interaction_id=request.interaction_id,
        )
        if reservation is None:
            return (
                f"the {priority.value} budget cannot admit ${amount} "
                f"({tokens} input tokens + {params['max_tokens']} max_tokens)"
            )
        return _Admitted(reservation, params)

    def _settle(self, admitted: _Admitted, message: Any, latency_ms: int) -> Generation:
        generation = self._generation(message, latency_ms)
        budget.settle(self._db, admitted.reservation.id, generation.cost_usd)
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


def _deferred(reason: str) -> Generation:
    return Generation(text="", finish_reason="deferred", tokens_in=0, tokens_out=0, error=reason)


class ClaudeEngine(_Budgeted):
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
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="claude") as pool:
            return list(pool.map(self._one, requests))

    def _one(self, request: GenerationRequest) -> Generation:
        import anthropic

        params = self._params(request)
        tokens = self._count(params)
        if isinstance(tokens, str):
            return _deferred(tokens)
        admitted = self._reserve(request, params, tokens)
        if isinstance(admitted, str):
            return _deferred(admitted)
        started = time.perf_counter()
        try:
            message = self._client.messages.create(**admitted.params)
        except anthropic.APIStatusError as exc:
            budget.release(self._db, admitted.reservation.id, f"HTTP {exc.status_code}")
            reason = f"Claude answered HTTP {exc.status_code}: {exc.message}"
            if exc.status_code in _DEFER_STATUSES or exc.status_code >= 500:
                return _deferred(reason)
            return Generation(text="", finish_reason="error", tokens_in=0, tokens_out=0,
                              error=reason)  # fmt: skip
        except anthropic.APIConnectionError as exc:
            budget.release(self._db, admitted.reservation.id, "connection error")
            return _deferred(f"Claude unreachable: {exc}")
        except ValueError as exc:  # the SDK raises json.JSONDecodeError on a non-JSON body
            budget.release(self._db, admitted.reservation.id, "unreadable response")
            return _deferred(f"Claude's response was not JSON: {exc}")
        except BaseException:
            budget.release(self._db, admitted.reservation.id, "interrupted")
            raise
        return self._settle(admitted, message, int((time.perf_counter() - started) * 1000))


class ClaudeBatchEngine(_Budgeted):
    """Claude over the Message Batches API: every rate at half price, results within 24 h.

    :meth:`generate` reserves each request at the batch price, submits the admitted ones as one
    batch (``custom_id`` = request index and round), polls until it has ended, and collects the
    results by ``custom_id`` (they come back in any order). Errored, expired or canceled
    requests release their reservation and are submitted again in a new batch, up to
    ``claude_batch_max_rounds`` submissions; what still has no result is ``deferred``.

    ``sleep`` is injectable so tests need not wait real poll intervals.
    """

    def __init__(
        self, *, client: Any, db: Database, settings: Settings,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:  # fmt: skip
        super().__init__(client=client, db=db, settings=settings, batch=True)
        self._sleep = sleep

    @classmethod
    def from_settings(cls, settings: Settings, db: Database) -> ClaudeBatchEngine:
        """Build with :func:`build_client` (see :meth:`ClaudeEngine.from_settings`)."""
        return cls(client=build_client(settings), db=db, settings=settings)

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One output per request, same order (see the class docstring). Each request is
        counted once, however many rounds it takes; counting and reserving run
        ``claude_concurrency`` at a time."""
        if not requests:
            return []
        params = [self._params(r) for r in requests]
        results: dict[int, Generation] = {}
        last_error: dict[int, str] = {}
        workers = min(self._settings.claude_concurrency, len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="claude") as pool:
            tokens = list(pool.map(self._count, params))
            todo = []
            for index, counted in enumerate(tokens):
                if isinstance(counted, str):
                    results[index] = _deferred(counted)
                else:
                    todo.append(index)
            for round_no in range(1, self._settings.claude_batch_max_rounds + 1):
                if not todo:
                    break
                outcomes = pool.map(
                    lambda i: self._reserve(requests[i], params[i], int(tokens[i])), todo
                )
                admitted: dict[str, tuple[int, _Admitted]] = {}
                for index, outcome in zip(todo, outcomes, strict=True):
                    if isinstance(outcome, str):
                        results[index] = _deferred(outcome)
                    else:
                        admitted[f"r{index}-{round_no}-{uuid.uuid4().hex[:8]}"] = (index, outcome)
                todo = []
                if not admitted:
                    break
                for index, got in self._submit_and_collect(admitted):
                    if isinstance(got, Generation):
                        results[index] = got
                    else:
                        last_error[index] = got
                        todo.append(index)
        for index in todo:
            results[index] = _deferred(
                f"no batch result after {self._settings.claude_batch_max_rounds} rounds: "
                f"{last_error.get(index, 'unknown')}"
            )
        return [results[i] for i in range(len(requests))]

    def _submit_and_collect(
        self, admitted: dict[str, tuple[int, _Admitted]]
    ) -> list[tuple[int, Generation | str]]:
        """Submit one batch (``custom_id → (request index, reservation)``), wait for it, settle
        or release each request.

        Returns ``(request index, Generation or the reason it must go again)`` per request.
        """
        import anthropic

        reservations = [adm.reservation.id for _, adm in admitted.values()]
        started = time.perf_counter()
        try:
            batch = self._client.messages.batches.create(
                requests=[
                    {"custom_id": cid, "params": adm.params} for cid, (_, adm) in admitted.items()
                ]
            )
            while batch.processing_status != "ended":
                self._sleep(self._settings.claude_batch_poll_s)
                batch = self._client.messages.batches.retrieve(batch.id)
            seen: dict[str, Any] = {}
            for item in self._client.messages.batches.results(batch.id):
                seen[item.custom_id] = item.result
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            budget.release_many(self._db, reservations, "batch submission failed")
            return [(i, f"batch failed: {exc}") for i, _ in admitted.values()]
        except BaseException:
            budget.release_many(self._db, reservations, "interrupted")
            raise
        latency_ms = int((time.perf_counter() - started) * 1000)
        out: list[tuple[int, Generation | str]] = []
        # One transaction settles the batch, one per kind of failure releases the rest.
        settled: dict[uuid.UUID, Decimal] = {}
        unanswered: dict[str, list[uuid.UUID]] = {}
        for cid, (index, adm) in admitted.items():
            result = seen.get(cid)
            kind = getattr(result, "type", "missing")
            if kind == "succeeded":
                generation = self._generation(result.message, latency_ms)  # type: ignore[union-attr]
                settled[adm.reservation.id] = generation.cost_usd
                out.append((index, generation))
                continue
            unanswered.setdefault(f"batch result {kind}", []).append(adm.reservation.id)
            detail = getattr(getattr(getattr(result, "error", None), "error", None), "message", "")
            out.append((index, f"batch result {kind}" + (f": {detail}" if detail else "")))
        budget.settle_many(self._db, settled)
        for reason, ids in unanswered.items():
            budget.release_many(self._db, ids, reason)
        log.info(
            "claude_batch_collected",
            batch_id=batch.id,
            requests=len(admitted),
            succeeded=sum(isinstance(g, Generation) for _, g in out),
            seconds=round(latency_ms / 1000, 1),
        )
        return out
