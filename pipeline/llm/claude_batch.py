"""Claude over the Message Batches API, under the day's budget: every rate at half price,
results within 24 hours (docs.anthropic.com, "Batch processing").

Each request is counted and reserved at the batch price like a Messages call
(:class:`~pipeline.llm.claude.Budgeted`); the admitted ones go out as one batch, which is polled
until it has ended (with a deadline), and the results are collected by ``custom_id`` (they come
back in any order). Errored, expired or canceled requests release their reservation and go again
in a new batch, up to ``claude_batch_max_rounds`` submissions.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import structlog

from pipeline.db.engine import Database
from pipeline.errors import RetryableError
from pipeline.llm.base import Generation, GenerationRequest
from pipeline.llm.claude import Admitted, Budgeted, Refusal, build_client, deferred
from pipeline.settings import Settings
from pipeline.spend import reservations

log = structlog.get_logger(__name__)


class BatchDeadlineError(RetryableError):
    """A submitted Message Batch had not ended by ``claude_batch_deadline_s``."""


class ClaudeBatchEngine(Budgeted):
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
            counted_tokens = {i: t for i, t in enumerate(tokens) if isinstance(t, int)}
            todo = []
            for index, counted in enumerate(tokens):
                if isinstance(counted, Refusal):
                    results[index] = deferred(counted.reason)
                else:
                    todo.append(index)
            for round_no in range(1, self._settings.claude_batch_max_rounds + 1):
                if not todo:
                    break
                outcomes = pool.map(
                    lambda i: self._reserve(requests[i], params[i], counted_tokens[i]), todo
                )
                admitted: dict[str, tuple[int, Admitted]] = {}
                for index, outcome in zip(todo, outcomes, strict=True):
                    if isinstance(outcome, Refusal):
                        results[index] = deferred(outcome.reason)
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
            results[index] = deferred(
                f"no batch result after {self._settings.claude_batch_max_rounds} rounds: "
                f"{last_error.get(index, 'unknown')}"
            )
        return [results[i] for i in range(len(requests))]

    def _submit_and_collect(
        self, admitted: dict[str, tuple[int, Admitted]]
    ) -> list[tuple[int, Generation | str]]:
        """Submit one batch (``custom_id → (request index, reservation)``), wait for it, settle
        or release each request.

        Returns ``(request index, Generation or the reason it must go again)`` per request.
        """
        import anthropic

        held = [adm.reservation.id for _, adm in admitted.values()]
        started = time.perf_counter()
        try:
            batch = self._client.messages.batches.create(
                requests=[
                    {"custom_id": cid, "params": adm.params} for cid, (_, adm) in admitted.items()
                ]
            )
            batch = self._wait_until_ended(batch)
            seen: dict[str, Any] = {}
            for item in self._client.messages.batches.results(batch.id):
                seen[item.custom_id] = item.result
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            reservations.release_many(self._db, held, "batch submission failed")
            return [(i, f"batch failed: {exc}") for i, _ in admitted.values()]
        except BatchDeadlineError as exc:
            reservations.release_many(self._db, held, "batch poll deadline passed")
            return [(i, str(exc)) for i, _ in admitted.values()]
        except BaseException:
            reservations.release_many(self._db, held, "interrupted")
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
        reservations.settle_many(self._db, settled)
        for reason, ids in unanswered.items():
            reservations.release_many(self._db, ids, reason)
        log.info(
            "claude_batch_collected",
            batch_id=batch.id,
            requests=len(admitted),
            succeeded=sum(isinstance(g, Generation) for _, g in out),
            seconds=round(latency_ms / 1000, 1),
        )
        return out

    def _wait_until_ended(self, batch: Any) -> Any:
        """Poll a submitted batch every ``claude_batch_poll_s`` until it has ended; cancel it
        and raise once ``claude_batch_deadline_s`` has passed (tenacity: fixed wait, stop after
        the delay, retry while the batch is still processing).

        Raises:
            BatchDeadlineError: the batch did not end in time (it was asked to cancel).
        """
        import tenacity

        if batch.processing_status == "ended":
            return batch
        poll = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda b: b.processing_status != "ended"),
            wait=tenacity.wait_fixed(self._settings.claude_batch_poll_s),
            stop=tenacity.stop_after_delay(self._settings.claude_batch_deadline_s),
            sleep=self._sleep,
        )
        try:
            return poll(self._client.messages.batches.retrieve, batch.id)
        except tenacity.RetryError as exc:
            with contextlib.suppress(Exception):  # best effort: the deadline is what counts
                self._client.messages.batches.cancel(batch.id)
            raise BatchDeadlineError(
                f"batch {batch.id} still processing after "
                f"{self._settings.claude_batch_deadline_s:.0f} s (PATTERNS_CLAUDE_BATCH_DEADLINE_S)"
            ) from exc
