"""Fault scenario: every worker role killed with SIGKILL in the middle of its work, again and
again, while 48 interactions go through extraction and embedding.

The extract worker is killed while its batch's model calls are in flight (the loopback model
server holds them), the embed worker while patterns wait for their embeddings; each is started
again at once. Redis hands the unacknowledged messages out again after the visibility timeout
(8 s here), the claim's lease gives the redelivered task its rows back, a batch killed twice
sets its suspects aside, and the sweep re-publishes embeddings that never came.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest
from support.chat_server import chat_server
from support.faults import (
    MARKER,
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

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.intake.outbox import publish_pending
from pipeline.intake.store import store

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

N = 48
BATCH = 8
#: The victims, in turn: each role up to three times (an interaction whose batch is killed
#: three times goes dead, PATTERNS_EXTRACT_MAX_STARTS).
KILLS = ("extract", "embed") * 3


def _unembedded(db: Database) -> int:
    from sqlalchemy import func, select

    from pipeline.db.models import Pattern

    with db.session(ALL_PROJECTS) as s:
        return int(
            s.scalar(
                select(func.count()).where(Pattern.is_active.is_(True), Pattern.embedding.is_(None))
            )
            or 0
        )


def test_sigkill_of_each_role_mid_work_loses_and_doubles_nothing(
    database_url: str, db: Database, redis_url: str, data_dir: Path, tmp_path: Path,
    die_with_parent: Callable[[], None],
) -> None:  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        ids = store(s, interactions(N, "kill")).interaction_ids
    dispatcher = publisher(redis_url)
    with chat_server(scripted_model, delay_s=1.5) as (url, model), sweep_beat(redis_url):
        env = worker_env(
            database_url, redis_url, data_dir,
            **local_model_env(url, BATCH),
            PATTERNS_BROKER_VISIBILITY_TIMEOUT_S="8", PATTERNS_EXTRACT_LEASE_S="120",
            PATTERNS_EXTRACT_MAX_STARTS="3",
        )  # fmt: skip
        rig = Rig(env, tmp_path, die_with_parent)
        try:
            rig.start("extract", "extract")
            rig.start("embed", "embed")
            started = time.monotonic()
            assert publish_pending(db, dispatcher, ids, BATCH) == N
            killed: list[str] = []
            for victim in KILLS:
                busy = (lambda: model.in_flight > 0) if victim == "extract" else (
                    lambda: _unembedded(db) > 0
                )  # fmt: skip
                wait_until(
                    lambda: busy() or check(db, ids).lost == 0, 240,  # noqa: B023
                    lambda: f"no {victim} work to interrupt\n{rig.tail()}", 0.02,  # noqa: B023
                )  # fmt: skip
                if not busy():  # all done: nothing left to interrupt
                    break
                rig.restart(victim)
                killed.append(victim)
            wait_until(
                lambda: check(db, ids).lost == 0, 300, lambda: f"{check(db, ids)}\n{rig.tail()}"
            )
            took = time.monotonic() - started
        finally:
            rig.stop_all()
    inv = check(db, ids)
    record(
        "SIGKILL each role mid-work", f"{N} interactions, batches of {BATCH}",
        f"{rig.kills} SIGKILLs ({killed.count('extract')} extract with model calls in flight, "
        f"{killed.count('embed')} embed with embeddings pending)", inv,
        "pytest tests/faults/test_fault_kills.py",
    )  # fmt: skip
    print(f"{inv} in {took:.0f} s")
    inv.assert_clean()
    # Both roles were killed mid-work at least twice (the last kills may find the work done).
    assert killed.count("extract") >= 2 and killed.count("embed") >= 2, killed
    # The extract kills interrupted model calls, which were made again after redelivery.
    assert max(n for p, n in model.seen.items() if MARKER.search(p)) >= 2
    assert inv.extracted + inv.dead + inv.failed == N and inv.extracted >= N - 2 * BATCH
