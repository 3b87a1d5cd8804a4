"""A worker killed with SIGKILL in the middle of an extract task: the task is redelivered
(``acks_late`` + ``task_reject_on_worker_lost``; Redis hands an unacknowledged message out again
after the visibility timeout, here 20 s) to a second worker, and every interaction ends
extracted (or failed by the model) exactly once.

A worker stopped with SIGTERM or killed with SIGKILL (its main process alone, as ``kill`` or the
OOM killer would) leaves no vLLM engine process (``VLLM::EngineCore``, ``VLLM::Worker``) behind:
without :mod:`pipeline.llm.reaper` they outlived a SIGKILL under PID 1."""

from __future__ import annotations

import gzip
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis
from sqlalchemy import func, select
from support.processes import start_worker, stop_group

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, LLMCall, Pattern
from pipeline.intake.normalize import parse_record
from pipeline.intake.outbox import publish_pending
from pipeline.intake.store import store
from pipeline.settings import Settings
from workers.app import make_celery
from workers.dispatch import CeleryDispatcher

pytestmark = pytest.mark.e2e

PATTERNS = Path(sys.executable).with_name("patterns")
VISIBILITY_TIMEOUT_S = 20
BATCH = 8
#: Celery's log line when a worker takes a task (the start-up banner also names the task).
RECEIVED = re.compile(r"Task patterns\.extract_batch\[[0-9a-f-]+\] received")
#: Seconds the engine processes get to be gone once the worker is (the watchdog polls every
#: 0.2 s and allows 3 s after SIGTERM; measured about 1 s after a SIGKILL, 0 after a SIGTERM).
ENGINE_EXIT_S = 20


def _worker_env(
    database_url: str, redis_url: str, extract_model_path: str, data_dir: Path, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATTERNS_")}
    env.update(
        DATABASE_URL=database_url, REDIS_URL=redis_url, HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1", PATTERNS_EXTRACT_MODEL=extract_model_path,
        PATTERNS_DATA_DIR=str(data_dir), **extra,
    )  # fmt: skip
    return env


def _states(db: Database, ids: list[int]) -> dict[str, Any]:
    with db.session(ALL_PROJECTS) as s:
        return {
            "status": dict(
                s.execute(select(Interaction.id, Interaction.status).where(
                    Interaction.id.in_(ids))).all()
            ),
            "llm_calls": int(s.scalar(select(func.count()).select_from(LLMCall)) or 0),
        }  # fmt: skip


def test_killed_worker_task_is_redelivered_and_done_once(
    database_url: str, db: Database, redis_url: str, shared_corpus: Path,
    extract_model_path: str, data_dir: Path, tmp_path: Path,
    die_with_parent: Callable[[], None],
) -> None:  # fmt: skip
    with gzip.open(shared_corpus, "rt") as fh:
        records = [parse_record(json.loads(next(fh))) for _ in range(BATCH)]
    with db.session(ALL_PROJECTS) as s:
        ids = store(s, records).interaction_ids
    assert len(ids) == BATCH
    settings = Settings(
        redis_url=redis_url, broker_visibility_timeout_s=VISIBILITY_TIMEOUT_S,
        extract_batch_size=BATCH,
    )  # type: ignore[call-arg]  # fmt: skip
    assert publish_pending(db, CeleryDispatcher(make_celery(settings)), ids, BATCH) == BATCH

    env = _worker_env(
        database_url, redis_url, extract_model_path, data_dir,
        PATTERNS_EXTRACT_BATCH_SIZE=str(BATCH),
        PATTERNS_BROKER_VISIBILITY_TIMEOUT_S=str(VISIBILITY_TIMEOUT_S),
    )  # fmt: skip
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    first = start_worker(env, first_log, die_with_parent)
    try:
        deadline = time.monotonic() + 240
        while not RECEIVED.search(first_log.read_text(errors="replace")):
            if first.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"first worker never took the task: {first_log.read_text()[-3000:]}")
            time.sleep(0.05)
        # The task is running (received; nothing written yet): kill the whole process group.
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        stop_group(first, signal.SIGKILL)
    killed = _states(db, ids)
    assert killed["llm_calls"] == 0, "the task finished before the kill; nothing was tested"
    assert set(killed["status"].values()) == {"queued"}
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.llen("extract.local") == 0
        assert client.hlen("unacked") == 1  # held for the dead worker until the timeout
    finally:
        client.close()

    second = start_worker(env, second_log, die_with_parent)
    try:
        deadline = time.monotonic() + 300
        while True:
            state = _states(db, ids)
            if all(v in ("extracted", "failed") for v in state["status"].values()):
                break
            if second.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"not redelivered: {state} {second_log.read_text()[-3000:]}")
            time.sleep(1)
    finally:
        stop_group(second)
    statuses = list(_states(db, ids)["status"].values())
    assert statuses.count("extracted") >= BATCH - 2, statuses
    with db.session(ALL_PROJECTS) as s:
        # One committed run: one first-attempt model call per interaction. (If the kill came
        # after the batch was claimed, the redelivered task keeps one crash suspect and sets
        # the others aside as tasks of their own, pipeline.extract.claim: several batches.)
        firsts = s.execute(
            select(LLMCall.interaction_id, func.count())
            .where(LLMCall.attempt == 1)
            .group_by(LLMCall.interaction_id)
        ).all()
        assert sorted(i for i, _ in firsts) == sorted(ids)
        assert {n for _, n in firsts} == {1}
        assert set(s.scalars(select(Interaction.extract_starts)).all()) == {0}
        assert s.scalar(select(func.count()).where(Interaction.lease_owner.is_not(None))) == 0
        dupes = s.execute(
            select(Pattern.source_interaction_id, Pattern.title, func.count())
            .group_by(Pattern.source_interaction_id, Pattern.title)
            .having(func.count() > 1)
        ).all()
        assert dupes == []
        # The broker redelivered the message; it was published once.
        assert set(s.scalars(select(Interaction.attempts)).all()) == {1}
    assert RECEIVED.search(second_log.read_text(errors="replace"))


def _engine_processes(pid: int) -> list[psutil.Process]:
    """``pid``'s descendants titled like vLLM's engine processes (``VLLM::...``)."""
    found = []
    for proc in psutil.Process(pid).children(recursive=True):
        with suppress(psutil.Error):
            if proc.cmdline()[:1] and proc.cmdline()[0].startswith("VLLM::"):
                found.append(proc)
    return found


def _running(procs: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in procs if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_stopped_worker_leaves_no_engine_process(
    sig: signal.Signals, database_url: str, redis_url: str, extract_model_path: str,
    data_dir: Path, tmp_path: Path, die_with_parent: Callable[[], None],
) -> None:  # fmt: skip
    log = tmp_path / "worker.log"
    worker = start_worker(
        _worker_env(database_url, redis_url, extract_model_path, data_dir), log, die_with_parent
    )
    engines: list[psutil.Process] = []
    try:
        deadline = time.monotonic() + 300
        while "ready." not in log.read_text(errors="replace"):
            if worker.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"worker not ready: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        engines = _engine_processes(worker.pid)
        titles = sorted(p.cmdline()[0].strip() for p in engines)
        assert "VLLM::EngineCore" in titles, titles
        # Its main process alone: the engine's processes are not signalled by the test.
        signalled = time.monotonic()
        os.kill(worker.pid, sig)
        worker.wait(timeout=60)
        stopped = time.monotonic()
        while _running(engines) and time.monotonic() - stopped < ENGINE_EXIT_S:
            time.sleep(0.1)
        left = [p.pid for p in _running(engines)]
        assert not left, f"engine processes {left} outlived the worker by {ENGINE_EXIT_S} s"
        print(
            f"{sig.name}: worker gone after {stopped - signalled:.1f} s, its engine processes "
            f"after {time.monotonic() - signalled:.1f} s"
        )
    finally:
        stop_group(worker, signal.SIGKILL)
        for proc in engines:
            with suppress(psutil.Error):
                proc.kill()
