"""Reservations are leases (issue 14): a live call keeps its money however long it runs, a late
settle of a lapsed lease never lets a later reservation pass the cap, and a Claude Message Batch
task delivered twice submits its batch once."""

from __future__ import annotations

import datetime as dt
import threading
import time
from decimal import Decimal

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select, text
from support.messages_api import MessagesAPIServer

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import BudgetDay, BudgetReservation, ClaudeMessageBatch
from pipeline.extract.prompts import extraction_messages
from pipeline.extract.schemas import extraction_json_schema
from pipeline.llm.base import GenerationRequest
from pipeline.llm.claude import ClaudeEngine, build_client
from pipeline.llm.claude_batch import ClaudeBatchEngine
from pipeline.settings import Settings
from pipeline.spend.leases import heartbeat, renew
from pipeline.spend.reservations import Reservation, release_stale, reserve, settle

pytestmark = pytest.mark.integration

D = Decimal
DAY = dt.date(2026, 12, 8)
MODEL = "claude-sonnet-5-5"


def _reserve(db: Database, settings: Settings, amount: str) -> Reservation | None:
    return reserve(
        db, settings=settings, model=MODEL, amount_usd=D(amount), task_type="complex_reasoning",
        day=DAY,
    )  # fmt: skip


def _lapse(db: Database, *ids: object) -> None:
    with db.session(ALL_PROJECTS) as s:
        s.execute(
            text("UPDATE budget_reservations SET lease_expires_at = now() - interval '1 second' "
                 "WHERE id = ANY(:ids)"), {"ids": list(ids)},
        )  # fmt: skip


def _day(db: Database, day: dt.date | None = None) -> tuple[Decimal, Decimal]:
    with db.session(ALL_PROJECTS) as s:
        q = select(BudgetDay.spent_usd, BudgetDay.reserved_usd)
        if day is not None:
            q = q.where(BudgetDay.day == day)
        row = s.execute(q).one()
    return row[0], row[1]


def _statuses(db: Database) -> list[str]:
    with db.session(ALL_PROJECTS) as s:
        return sorted(s.scalars(select(BudgetReservation.status)).all())


def test_a_renewed_lease_is_not_released_however_old(db: Database) -> None:
    settings = Settings(daily_budget_usd=D("10"), budget_lease_s=300)
    r = _reserve(db, settings, "1")
    assert r is not None
    with db.session(ALL_PROJECTS) as s:  # 2 hours old: the old fixed timeout (900 s) freed it
        s.execute(text("UPDATE budget_reservations SET created_at = now() - interval '2 hours'"))
    assert release_stale(db) == 0
    _lapse(db, r.id)
    assert renew(db, [r.id], 300) == {r.id}
    assert release_stale(db) == 0
    _lapse(db, r.id)
    assert release_stale(db) == 1
    assert renew(db, [r.id], 300) == set()  # released: no renewal


def test_a_heartbeat_keeps_a_slow_call_reserved(db: Database) -> None:
    settings = Settings(daily_budget_usd=D("10"))
    r = _reserve(db, settings, "1")
    assert r is not None
    _lapse(db, r.id)
    renew(db, [r.id], 0.6)
    released = 0
    with heartbeat(db, [r.id], 0.6):  # renews every 0.2 s
        deadline = time.monotonic() + 2.0  # a call far longer than its lease
        while time.monotonic() < deadline:
            released += release_stale(db)
            time.sleep(0.05)
    assert released == 0
    assert settle(db, r.id, D("0.5"))
    assert _day(db) == (D("0.5"), D("0"))


def test_a_late_settle_never_lets_a_later_reservation_pass_the_cap(db: Database) -> None:
    """The invariant: spent <= cap unless a call was paid for outside a live lease; and then
    nothing new is admitted until the day has room again."""
    settings = Settings(daily_budget_usd=D("10"))
    a = _reserve(db, settings, "6")
    assert a is not None
    _lapse(db, a.id)  # its worker stopped renewing
    assert release_stale(db) == 1
    b = _reserve(db, settings, "8")  # a's money was re-used
    assert b is not None
    assert settle(db, a.id, D("6"))  # but a's call was paid for
    assert _day(db) == (D("6"), D("8"))  # 14 > 10: over the cap, by a's late settle only

    admitted: list[Reservation | None] = []

    def reserver() -> None:
        for _ in range(5):
            admitted.append(_reserve(db, settings, "0.000001"))

    threads = [threading.Thread(target=reserver) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert admitted and not any(admitted)  # nothing admitted while over the cap
    assert settle(db, b.id, D("3"))
    assert _day(db) == (D("9"), D("0"))
    c = _reserve(db, settings, "1")  # room again: exactly up to the cap
    assert c is not None
    assert _reserve(db, settings, "0.000001") is None
    assert settle(db, c.id, D("1"))
    assert _day(db) == (D("10"), D("0"))


def _claude_settings(server: MessagesAPIServer, **kw: object) -> Settings:
    base: dict[str, object] = {
        "anthropic_api_key": SecretStr("sk-test"), "anthropic_base_url": server.base_url,
        "claude_model": MODEL, "claude_max_tokens": 512, "claude_max_retries": 2,
        "claude_batch_poll_s": 0.01, "daily_budget_usd": D("50"),
    }  # fmt: skip
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


def _request(i: int) -> GenerationRequest:
    return GenerationRequest(
        messages=extraction_messages(f"Pull request #{i}: retry with backoff {i}", max_chars=2000),
        json_schema=extraction_json_schema(),
        max_tokens=512,
        task_type="pattern_extraction",
    )


def test_a_messages_call_longer_than_its_lease_keeps_its_reservation(
    db: Database, messages_api: MessagesAPIServer
) -> None:
    messages_api.response_delay_s = 1.5
    settings = _claude_settings(messages_api).model_copy(update={"budget_lease_s": 0.6})
    stop = threading.Event()
    released: list[int] = []

    def sweeper() -> None:
        while not stop.wait(0.05):
            released.append(release_stale(db))

    thread = threading.Thread(target=sweeper)
    thread.start()
    try:
        (out,) = ClaudeEngine.from_settings(settings, db).generate([_request(1)])
    finally:
        stop.set()
        thread.join()
    assert out.finish_reason == "stop", out.error
    assert sum(released) == 0
    assert _statuses(db) == ["settled"]
    assert _day(db) == (out.cost_usd, D("0"))


class WorkerLost(BaseException):
    """The worker was killed while polling (the task goes back to the queue)."""


def test_a_batch_task_delivered_twice_submits_one_batch(
    db: Database, messages_api: MessagesAPIServer
) -> None:
    messages_api.batch_polls_until_ended = 3
    settings = _claude_settings(messages_api)
    requests = [_request(i) for i in range(4)]

    def killed(_: float) -> None:
        raise WorkerLost

    first = ClaudeBatchEngine(client=build_client(settings), db=db, settings=settings, sleep=killed)
    with pytest.raises(WorkerLost):
        first.generate(requests)
    assert len(messages_api.requests_to("/v1/messages/batches")) == 1
    assert _statuses(db) == ["reserved"] * 4  # the submitted batch keeps its money

    again = ClaudeBatchEngine(
        client=build_client(settings), db=db, settings=settings, sleep=lambda s: None
    )
    out = again.generate(requests)  # the same work, delivered again
    assert all(g.finish_reason == "stop" for g in out), [g.error for g in out]
    assert len(messages_api.requests_to("/v1/messages/batches")) == 1  # resumed, not resubmitted
    assert _statuses(db) == ["settled"] * 4  # the first run's reservations, adopted
    assert _day(db) == (sum((g.cost_usd for g in out), D("0")), D("0"))
    with db.session(ALL_PROJECTS) as s:
        assert s.scalar(select(func.count()).select_from(ClaudeMessageBatch)) == 1
