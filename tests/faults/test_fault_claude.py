"""Fault scenario: the Messages API answering 429, 529, 500, a timeout, malformed output and a
cut-off body, in turn, to a real Claude worker under a small daily budget.

With ``claude_only``, the extract worker routes each interaction to Claude while the day's
budget admits a reservation and to the local model (a loopback chat server) after that. The
Claude worker's calls meet the faults queued at the loopback Messages API: the SDK retries
429/529/500 and timeouts, the task retries a malformed answer, a call whose retries run out
fails with its reason. Spend stays under the cap, and every reservation is settled or released.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from support.chat_server import chat_server
from support.faults import (
    Rig,
    check,
    interactions,
    local_model_env,
    publisher,
    record,
    scripted_model,
    sweep_beat,
    wait_until,
    worker_env,
)
from support.messages_api import Fault, MessagesAPIServer

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import BudgetReservation, LLMCall
from pipeline.intake.outbox import publish_pending
from pipeline.intake.store import store

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

N = 16
BATCH = 4
BUDGET_USD = "0.05"
CLAUDE_TIMEOUT_S = 2.0
#: One round of the faults, in the order the issue lists them; queued three times.
FAULTS = (
    Fault(status=429, retry_after=0.2),
    Fault(status=529),
    Fault(status=500),
    Fault(delay_s=CLAUDE_TIMEOUT_S + 1),
    Fault(malformed_output=True),
    Fault(invalid_json_body=True),
)


def test_messages_api_faults_in_turn_never_overspend_or_leak(
    database_url: str, db: Database, redis_url: str, data_dir: Path, tmp_path: Path,
    die_with_parent: Callable[[], None],
) -> None:  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        ids = store(s, interactions(N, "claude")).interaction_ids
    dispatcher = publisher(redis_url)
    with (
        MessagesAPIServer() as api,
        chat_server(scripted_model, delay_s=0.2) as (url, _local),
        sweep_beat(redis_url),
    ):
        api.enqueue_faults(FAULTS * 3)
        env = worker_env(
            database_url, redis_url, data_dir,
            **local_model_env(url, BATCH),
            PATTERNS_LLM_STRATEGY="claude_only", PATTERNS_DAILY_BUDGET_USD=BUDGET_USD,
            PATTERNS_CLAUDE_TIMEOUT_S=str(CLAUDE_TIMEOUT_S), PATTERNS_CLAUDE_MAX_RETRIES="2",
            ANTHROPIC_API_KEY="sk-test", ANTHROPIC_BASE_URL=api.base_url,
        )  # fmt: skip
        rig = Rig(env, tmp_path, die_with_parent)
        try:
            rig.start("extract", "extract")
            rig.start("claude", "claude")
            rig.start("embed", "embed")
            started = time.monotonic()
            assert publish_pending(db, dispatcher, ids, BATCH) == N
            wait_until(
                lambda: check(db, ids).lost == 0, 300, lambda: f"{check(db, ids)}\n{rig.tail()}"
            )
            took = time.monotonic() - started
        finally:
            rig.stop_all()
        to_api, faults_left = len(api.requests_to("/v1/messages")), api.faults_left
    inv = check(db, ids)
    with db.session(ALL_PROJECTS) as s:
        by_provider = dict(
            s.execute(select(LLMCall.provider, func.count()).group_by(LLMCall.provider)).all()
        )
        reservations = dict(
            s.execute(
                select(BudgetReservation.status, func.count()).group_by(BudgetReservation.status)
            ).all()
        )
    record(
        "Messages API faults in turn", f"{N} interactions, claude_only, cap ${BUDGET_USD}",
        "429, 529, 500, timeout, malformed output, cut-off body; x3", inv,
        "pytest tests/faults/test_fault_claude.py",
    )  # fmt: skip
    print(f"{inv} in {took:.0f} s; {to_api} Messages requests; calls {by_provider}; "
          f"reservations {reservations}")  # fmt: skip
    inv.assert_clean()
    assert faults_left == 0, "not every queued fault was met"
    assert inv.cap_usd is not None and 0 < inv.spent_usd <= inv.cap_usd
    assert by_provider.get("claude", 0) > 0 and reservations.get("settled", 0) > 0
    # The cap bound: what the budget did not admit went to the local model.
    assert by_provider.get("local", 0) > 0, by_provider


def test_claude_worker_killed_mid_call_releases_and_redoes(
    database_url: str, db: Database, redis_url: str, data_dir: Path, tmp_path: Path,
    die_with_parent: Callable[[], None],
) -> None:  # fmt: skip
    """The Claude worker killed (SIGKILL) twice while its Messages call is in flight: the dead
    call's reservation lapses (lease 10 s) and the sweep releases it, Redis redelivers the task
    (visibility 8 s), and the call is made again; nothing is left reserved or spent twice."""
    n, kills = 8, 2

    def settled() -> bool:  # everything ended and the dead calls' reservations released
        inv = check(db, ids)
        return inv.lost == 0 and inv.reservations_open == 0

    with db.session(ALL_PROJECTS) as s:
        ids = store(s, interactions(n, "claude-kill")).interaction_ids
    dispatcher = publisher(redis_url)
    with MessagesAPIServer(response_delay_s=3.0) as api, chat_server(scripted_model) as (url, _):
        env = worker_env(
            database_url, redis_url, data_dir, **local_model_env(url, BATCH),
            PATTERNS_LLM_STRATEGY="claude_only", PATTERNS_DAILY_BUDGET_USD="1",
            PATTERNS_BUDGET_LEASE_S="10", PATTERNS_BROKER_VISIBILITY_TIMEOUT_S="8",
            # Longer than a worker's restart: the hand-off to Claude has no lease of its own
            # until the Claude worker reserves (the default is 600 s).
            PATTERNS_OUTBOX_STALE_AFTER_S="20",
            ANTHROPIC_API_KEY="sk-test", ANTHROPIC_BASE_URL=api.base_url,
        )  # fmt: skip
        rig = Rig(env, tmp_path, die_with_parent)
        with sweep_beat(redis_url):
            try:
                for name in ("extract", "claude", "embed"):
                    rig.start(name, name)
                started = time.monotonic()
                assert publish_pending(db, dispatcher, ids, BATCH) == n
                for _ in range(kills):
                    seen = len(api.requests_to("/v1/messages"))
                    wait_until(
                        lambda: len(api.requests_to("/v1/messages")) > seen,  # noqa: B023
                        120, rig.tail, 0.02,
                    )  # fmt: skip
                    rig.restart("claude")  # mid-call: the answer takes 3 s
                wait_until(settled, 300, lambda: f"{check(db, ids)}\n{rig.tail()}")
                took = time.monotonic() - started
            finally:
                rig.stop_all()
    inv = check(db, ids)
    with db.session(ALL_PROJECTS) as s:
        released = s.scalars(
            select(BudgetReservation.reason).where(BudgetReservation.status == "released")
        ).all()
    record(
        "Claude worker SIGKILLed mid-call", f"{n} interactions, claude_only, cap $1",
        f"{kills} SIGKILLs of the claude worker with a Messages call in flight", inv,
        "pytest tests/faults/test_fault_claude.py -k killed",
    )  # fmt: skip
    print(f"{inv} in {took:.0f} s; released: {released}")
    inv.assert_clean()
    assert inv.extracted == n
    assert len(released) >= kills, released  # the dead calls' reservations, freed by the sweep
