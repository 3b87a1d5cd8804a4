"""Claude over the Message Batches API, under the day's budget: every rate at half price,
results within 24 hours (docs.anthropic.com, "Batch processing").

Each request is counted and reserved at the batch price like a Messages call
(:class:`~pipeline.llm.claude.Budgeted`); the admitted ones go out as one batch, which is polled
until it has ended (with a deadline), and the results are collected by ``custom_id`` (they come
back in any order). Errored, expired or canceled requests release their reservation and go again
in a new batch, up to ``claude_batch_max_rounds`` submissions. Each poll renews the leases of the
batch's reservations (:mod:`pipeline.spend.leases`). Each round is claimed in
:mod:`pipeline.llm.batch_ledger` before it is submitted, so the same work delivered again resumes
the batch already submitted instead of submitting (and paying for) it twice.
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
from pipeline.llm import batch_ledger
from pipeline.llm.base import Generation, GenerationRequest
from pipeline.llm.claude import Admitted, Budgeted, Refusal, build_client, deferred
from pipeline.settings import Settings
from pipeline.spend import leases, reservations

log = structlog.get_logger(__name__)


class BatchDeadlineError(RetryableError):
    """A submitted Message Batch had not ended by ``claude_batch_deadline_s``."""


class BatchBusyError(RetryableError):
    """Another run (the same task delivered twice) is submitting the same batch right now."""


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
        ``claude_concurrency`` at a time.

        Raises:
            BatchBusyError: another run is submitting this very batch right now (retry later).
        """
        if not requests:
            return []
        params = [self._params(r) for r in requests]
        results: dict[int, Generation] = {}
        last_error: dict[int, str] = {}
        workers = min(self._settings.claude_concurrency, len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="claude") as pool:
            tokens = list(pool.map(self._count, params))
            counted = {i: t for i, t in enumerate(tokens) if isinstance(t, int)}
            todo = []
            for index, got in enumerate(tokens):
                if isinstance(got, Refusal):
                    results[index] = deferred(got.reason)
                else:
                    todo.append(index)
            for round_no in range(1, self._settings.claude_batch_max_rounds + 1):
                if not todo:
                    break
                cids = {f"r{i}-{round_no}": i for i in todo}
                todo = []
                for index, out in self._round(pool, requests, params, counted, cids):
                    if isinstance(out, Generation):
                        results[index] = out
                    else:
                        last_error[index] = out
                        todo.append(index)
        for index in todo:
            results[index] = deferred(
                f"no batch result after {self._settings.claude_batch_max_rounds} rounds: "
                f"{last_error.get(index, 'unknown')}"
            )
        return [results[i] for i in range(len(requests))]

    def _round(
        self, pool: ThreadPoolExecutor, requests: Sequence[GenerationRequest],
        params: list[dict[str, Any]], counted: dict[int, int], cids: dict[str, int],
    ) -> list[tuple[int, Generation | str]]:  # fmt: skip
        """One round: ``custom_id → request index``. Resume the batch a previous run of the same
        work submitted (:mod:`pipeline.llm.batch_ledger`), or reserve, claim and submit one.

        Returns ``(request index, Generation or the reason it must go again)`` per request (a
        budget refusal is a ``deferred`` Generation).
        """
        key = batch_ledger.request_key(self.model_name, [(c, params[i]) for c, i in cids.items()])
        max_age = self._settings.claude_batch_deadline_s
        found = batch_ledger.find(self._db, key, max_age_s=max_age)
        if found is not None and found.batch_id is not None:
            return self._resume(found, key, params, cids)
        if found is not None and found.lease_live:
            raise BatchBusyError(f"batch {key[:12]} is being submitted by another run")
        outcomes = pool.map(
            lambda i: self._reserve(requests[i], params[i], counted[i]), cids.values()
        )
        out: list[tuple[int, Generation | str]] = []
        admitted: dict[str, tuple[int, Admitted]] = {}
        for (cid, index), outcome in zip(cids.items(), outcomes, strict=True):
            if isinstance(outcome, Refusal):
                out.append((index, deferred(outcome.reason)))
            else:
                admitted[cid] = (index, outcome)
        if not admitted:
            return out
        held = {cid: adm.reservation.id for cid, (_, adm) in admitted.items()}
        if not batch_ledger.claim(self._db, key, held, lease_s=self._lease_s, max_age_s=max_age):
            reservations.release_many(self._db, held.values(), "batch claimed by another run")
            raise BatchBusyError(f"batch {key[:12]} was claimed by another run")
        return out + self._submit_and_collect(admitted, key)

    def _resume(
        self, found: batch_ledger.Recorded, key: str, params: list[dict[str, Any]],
        cids: dict[str, int],
    ) -> list[tuple[int, Generation | str]]:  # fmt: skip
        """Poll and collect the batch a previous run submitted, adopting its reservations;
        requests it did not carry (the budget refused them then) come back ``deferred``."""
        log.warning(
            "claude_batch_resumed", batch_id=found.batch_id, requests=len(found.reservations)
        )
        rows = batch_ledger.reservations_of(self._db, found.reservations.values())
        admitted: dict[str, tuple[int, Admitted]] = {}
        out: list[tuple[int, Generation | str]] = []
        for cid, index in cids.items():
            rid = found.reservations.get(cid)
            if rid is None or rid not in rows:
                out.append((index, deferred("not carried by the batch this work resumed")))
            else:
                admitted[cid] = (index, Admitted(rows[rid], params[index]))
        return out + self._submit_and_collect(admitted, key, batch_id=found.batch_id)

    @property
    def _lease_s(self) -> float:
        """The lease renewed on each poll: the budget lease, and at least three polls long."""
        return max(self._settings.budget_lease_s, 3 * self._settings.claude_batch_poll_s)

    def _submit_and_collect(
        self, admitted: dict[str, tuple[int, Admitted]], key: str, batch_id: str | None = None
    ) -> list[tuple[int, Generation | str]]:
        """Submit one batch (``custom_id → (request index, reservation)``; ``batch_id``: resume
        that one instead), wait for it, settle or release each request.

        Returns ``(request index, Generation or the reason it must go again)`` per request.
        """
        import anthropic

        held = [adm.reservation.id for _, adm in admitted.values()]
        started = time.perf_counter()
        try:
            if batch_id is None:
                batch = self._client.messages.batches.create(
                    requests=[
                        {"custom_id": cid, "params": adm.params}
                        for cid, (_, adm) in admitted.items()
                    ]
                )
                batch_id = batch.id
                batch_ledger.record_submitted(self._db, key, batch.id)
            else:
                batch = self._client.messages.batches.retrieve(batch_id)
            batch = self._wait_until_ended(batch, held, key)
            seen: dict[str, Any] = {}
            for item in self._client.messages.batches.results(batch.id):
                seen[item.custom_id] = item.result
        except (anthropic.APIStatusError, anthropic.APIConnectionError) as exc:
            self._abandon(key, held, "batch submission failed", submitted=batch_id is not None)
            return [(i, f"batch failed: {exc}") for i, _ in admitted.values()]
        except BatchDeadlineError as exc:
            reservations.release_many(self._db, held, "batch poll deadline passed")
            return [(i, str(exc)) for i, _ in admitted.values()]
        except BaseException:
            # Once submitted, the batch runs (and is paid for) without us: its reservations
            # stay, to be renewed by the run that resumes it or freed when their lease lapses.
            if batch_id is None:
                self._abandon(key, held, "interrupted", submitted=False)
            raise
        return self._collected(
            admitted, batch.id, seen, int((time.perf_counter() - started) * 1000)
        )

    def _abandon(self, key: str, held: list[uuid.UUID], reason: str, *, submitted: bool) -> None:
        """Release a round's reservations; drop its ledger claim if nothing was submitted."""
        reservations.release_many(self._db, held, reason)
        if not submitted:
            batch_ledger.forget(self._db, key)

    def _collected(
        self, admitted: dict[str, tuple[int, Admitted]], batch_id: str, seen: dict[str, Any],
        latency_ms: int,
    ) -> list[tuple[int, Generation | str]]:  # fmt: skip
        """Settle the succeeded requests of an ended batch (one transaction) and release the
        rest (one per kind of failure); ``(request index, Generation or reason)`` each."""
        out: list[tuple[int, Generation | str]] = []
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
            batch_id=batch_id,
            requests=len(admitted),
            succeeded=sum(isinstance(g, Generation) for _, g in out),
            seconds=round(latency_ms / 1000, 1),
        )
        return out

    def _renew(self, held: list[uuid.UUID], key: str) -> None:
        """Renew the round's reservation leases and its ledger claim (best effort: a failure is
        logged; the lease covers three polls)."""
        try:
            leases.renew(self._db, held, self._lease_s)
            batch_ledger.renew(self._db, key, self._lease_s)
        except Exception as exc:  # the next poll tries again
            log.warning("claude_batch_lease_renew_failed", error=str(exc))

    def _wait_until_ended(self, batch: Any, held: list[uuid.UUID], key: str) -> Any:
        """Poll a submitted batch every ``claude_batch_poll_s`` until it has ended, renewing the
        leases of its reservations (``held``) and ledger row (``key``) on each poll; cancel it
        and raise once ``claude_batch_deadline_s`` has passed (tenacity: fixed wait, stop after
        the delay, retry while the batch is still processing).

        Raises:
            BatchDeadlineError: the batch did not end in time (it was asked to cancel).
        """
        import tenacity

        if batch.processing_status == "ended":
            return batch

        def retrieve(batch_id: str) -> Any:
            self._renew(held, key)
            return self._client.messages.batches.retrieve(batch_id)

        poll = tenacity.Retrying(
            retry=tenacity.retry_if_result(lambda b: b.processing_status != "ended"),
            wait=tenacity.wait_fixed(self._settings.claude_batch_poll_s),
            stop=tenacity.stop_after_delay(self._settings.claude_batch_deadline_s),
            sleep=self._sleep,
        )
        try:
            return poll(retrieve, batch.id)
        except tenacity.RetryError as exc:
            with contextlib.suppress(Exception):  # best effort: the deadline is what counts
                self._client.messages.batches.cancel(batch.id)
            raise BatchDeadlineError(
                f"batch {batch.id} still processing after "
                f"{self._settings.claude_batch_deadline_s:.0f} s (PATTERNS_CLAUDE_BATCH_DEADLINE_S)"
            ) from exc
