"""Fault scenario: a task redelivered after Redis's visibility timeout while its first copy is
still running.

Redis hands an unacknowledged message to another consumer once ``visibility_timeout`` has
passed, whether or not the first consumer is alive. Here the first worker's batch holds its
model calls for 15 s, the timeout is 4 s, and a second worker starts after it (a consumer
restores overdue messages when it starts): both copies run the same task id, both call the
model, and one result is stored (``write_one`` stores only what is still waiting, under a row
lock), the lease released once.
"""

from __future__ import annotations

import re
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

N = 4
VISIBILITY_TIMEOUT_S = 4
MODEL_DELAY_S = 15.0
RECEIVED = re.compile(r"Task patterns\.extract_batch\[([0-9a-f-]+)\] received")


def _received(log: Path) -> list[str]:
    return RECEIVED.findall(log.read_text(errors="replace"))


def test_task_redelivered_while_first_copy_runs_is_stored_once(
    database_url: str, db: Database, redis_url: str, data_dir: Path, tmp_path: Path,
    die_with_parent: Callable[[], None],
) -> None:  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        ids = store(s, interactions(N, "vt")).interaction_ids
    dispatcher = publisher(redis_url)
    with chat_server(scripted_model, delay_s=MODEL_DELAY_S) as (url, model), sweep_beat(redis_url):
        env = worker_env(
            database_url, redis_url, data_dir,
            **{**local_model_env(url, N), "PATTERNS_EXTRACT_LINGER_S": "0"},
            PATTERNS_OPENAI_TIMEOUT_S="60",
            PATTERNS_BROKER_VISIBILITY_TIMEOUT_S=str(VISIBILITY_TIMEOUT_S),
        )  # fmt: skip
        rig = Rig(env, tmp_path, die_with_parent)
        try:
            rig.start("first", "extract")
            rig.start("embed", "embed")
            started = time.monotonic()
            assert publish_pending(db, dispatcher, ids, N) == N
            wait_until(lambda: model.in_flight > 0, 60, rig.tail, 0.02)
            time.sleep(VISIBILITY_TIMEOUT_S + 1)  # the message is overdue; the first copy runs
            assert model.in_flight > 0
            rig.start("second", "extract")
            wait_until(lambda: bool(_received(rig.logs["second"])), 60, rig.tail, 0.1)
            wait_until(
                lambda: check(db, ids).lost == 0 and model.in_flight == 0, 180,
                lambda: f"{check(db, ids)}\n{rig.tail()}",
            )  # fmt: skip
            took = time.monotonic() - started
        finally:
            rig.stop_all()
    inv = check(db, ids)
    record(
        "Task redelivered after the visibility timeout while running",
        f"{N} interactions in one batch; model calls held {MODEL_DELAY_S:.0f} s",
        f"visibility timeout {VISIBILITY_TIMEOUT_S} s; a second worker takes the overdue message",
        inv, "pytest tests/faults/test_fault_redelivery.py",
    )  # fmt: skip
    print(f"{inv} in {took:.0f} s; model saw {sorted(model.seen.values())}")
    inv.assert_clean()
    first, second = _received(rig.logs["first"]), _received(rig.logs["second"])
    assert first[0] in second, (first, second)  # the same task, delivered twice
    # The second copy cannot tell a running first copy from a dead one: it takes its rows
    # back as crash suspects, keeps one (its model call is made twice) and sets the others
    # aside as tasks of their own, which find them done. One result per interaction is stored.
    seen = sorted(n for p, n in model.seen.items() if MARKER.search(p))
    assert seen[-1] == 2 and len(seen) == N, seen
    assert inv.extracted == N and inv.patterns == 2 * N
