"""Engine processes die with their owner (:mod:`pipeline.llm.reaper`), on real processes titled
like vLLM's (``setproctitle``, as vLLM does): the watchdog stops them when the owner is killed,
and :func:`~pipeline.llm.reaper.reap_orphans` stops those whose owner is gone, and only those.
The same with the real engine and a real worker: ``tests/e2e/test_worker_killed.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import suppress

import psutil
import pytest

from pipeline.llm.reaper import OWNER_ENV, is_engine, owner_token, reap_orphans

pytestmark = pytest.mark.integration

#: A stand-in engine process: titled like vLLM's EngineCore, with a VLLM::Worker child.
FAKE_ENGINE = """
import subprocess, sys, time, setproctitle
setproctitle.setproctitle("VLLM::EngineCore")
worker = subprocess.Popen([sys.executable, "-c",
    "import time, setproctitle; setproctitle.setproctitle('VLLM::Worker'); time.sleep(600)"])
print(worker.pid, flush=True)
time.sleep(600)
"""

#: An engine owner: starts its watchdog, then a stand-in engine; prints the engine's pids.
OWNER = f"""
import subprocess, sys, time
from pipeline.llm.reaper import ensure_watchdog
ensure_watchdog()
engine = subprocess.Popen([sys.executable, "-c", {FAKE_ENGINE!r}], stdout=subprocess.PIPE,
                          text=True)
print(engine.pid, engine.stdout.readline().strip(), flush=True)
time.sleep(600)
"""


def _wait_titled(pids: list[int], timeout_s: float = 30) -> list[psutil.Process]:
    procs = [psutil.Process(pid) for pid in pids]
    deadline = time.monotonic() + timeout_s
    while not all(is_engine(p) for p in procs):
        assert time.monotonic() < deadline, "the stand-in engine never set its title"
        time.sleep(0.05)
    return procs


def _gone_within(procs: list[psutil.Process], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in procs):
            return True
        time.sleep(0.05)
    return False


@pytest.fixture()
def cleanup() -> Iterator[list[psutil.Process]]:
    """Processes to SIGKILL after the test, whatever happened."""
    procs: list[psutil.Process] = []
    yield procs
    for proc in procs:
        with suppress(psutil.Error):
            proc.kill()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_watchdog_stops_the_engine_when_its_owner_dies(
    sig: signal.Signals, cleanup: list[psutil.Process]
) -> None:
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    cleanup.append(psutil.Process(owner.pid))
    assert owner.stdout is not None
    engines = _wait_titled([int(pid) for pid in owner.stdout.readline().split()])
    cleanup.extend(engines)
    watchdogs = [p for p in psutil.Process(owner.pid).children() if p not in engines]
    assert len(watchdogs) == 1
    cleanup.extend(watchdogs)
    owner.send_signal(sig)  # the owner alone: its process group is not signalled
    owner.wait(timeout=10)
    assert _gone_within(engines, timeout_s=10), [p.pid for p in engines]
    assert _gone_within(watchdogs, timeout_s=5), "the watchdog outlived its owner"


def test_reap_orphans_stops_only_engines_whose_owner_is_gone(
    cleanup: list[psutil.Process],
) -> None:
    def fake_engine(token: str) -> list[psutil.Process]:
        proc = subprocess.Popen(
            [sys.executable, "-c", FAKE_ENGINE], stdout=subprocess.PIPE, text=True,
            # As ensure_watchdog sets them: the token, kept readable under a process title.
            env={**os.environ, OWNER_ENV: token, "SPT_NOENV": "1"},
        )  # fmt: skip
        assert proc.stdout is not None
        procs = _wait_titled([proc.pid, int(proc.stdout.readline())])
        cleanup.extend(procs)
        return procs

    gone_owner = subprocess.Popen([sys.executable, "-c", "pass"])
    token = owner_token(psutil.Process(gone_owner.pid))
    gone_owner.wait()
    orphans = fake_engine(token)
    owned = fake_engine(owner_token())  # owned by this (live) test process
    reaped = reap_orphans(grace_s=5)
    assert {p.pid for p in orphans} <= set(reaped)
    assert not {p.pid for p in owned} & set(reaped)
    assert _gone_within(orphans, timeout_s=5)
    assert all(p.is_running() for p in owned)
