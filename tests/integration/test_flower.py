"""Flower and redacted task arguments, on the test Redis: the published message carries a
redacted ``argsrepr`` header and the real arguments in its body; ``patterns flower`` (a real
subprocess) sits behind basic auth, shows only the redacted arguments, and keeps its state in a
file across a SIGTERM."""

from __future__ import annotations

import base64
import json
import os
import shelve
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from support.processes import free_port

from pipeline.settings import Settings
from workers.app import make_celery

pytestmark = pytest.mark.integration

PROMPT = "Please summarise this pull request discussion, including the reviewer's secret. " * 2
PATTERNS = Path(sys.executable).with_name("patterns")


def _raw_messages(redis_url: str, queue: str) -> list[dict[str, Any]]:
    """The JSON envelopes waiting in ``queue`` (kombu's Redis transport LPUSHes them)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return [json.loads(item) for item in reversed(client.lrange(queue, 0, -1))]
    finally:
        client.close()


def test_published_message_has_redacted_headers_and_real_body(redis_url: str) -> None:
    app = make_celery(Settings(redis_url=redis_url))
    ids = list(range(101, 133))
    app.send_task("patterns.analyze_local", args=[ids, {"101": PROMPT}])
    [envelope] = _raw_messages(redis_url, "extract.local")

    headers = envelope["headers"]
    assert headers["argsrepr"] == (
        f"([32 ids: 101..132], {{'101': '<redacted {len(PROMPT)} chars>'}})"
    )
    assert headers["kwargsrepr"] == "{}"
    args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
    assert args == [ids, {"101": PROMPT}]
    assert kwargs == {}


def _env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if "FLOWER" not in k}
    return {**env, "REDIS_URL": redis_url, **extra}


@pytest.fixture()
def flower(
    redis_url: str, tmp_path: Path, die_with_parent: Callable[[], None]
) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    """``(base url, state file, process)`` of a running ``patterns flower`` with user
    ``admin:pw``; terminated (SIGTERM) after the test if still running."""
    port = free_port()
    db = tmp_path / "state" / "flower.db"
    env = _env(
        redis_url,
        PATTERNS_FLOWER_BASIC_AUTH="admin:pw",
        PATTERNS_FLOWER_PORT=str(port),
        PATTERNS_FLOWER_DB=str(db),
    )
    log = (tmp_path / "flower.log").open("wb")
    proc = subprocess.Popen(
        [str(PATTERNS), "flower"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,  # no .env of the checkout
        preexec_fn=die_with_parent,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, (tmp_path / "flower.log").read_text()
            try:
                if httpx.get(f"{base}/healthcheck", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "Flower did not start in 60 s"
            time.sleep(0.3)
        yield base, db, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    output = (tmp_path / "flower.log").read_text()
    assert "admin:pw" not in output and ":pw" not in output


def test_flower_basic_auth_redaction_and_persistent_state(
    flower: tuple[str, Path, subprocess.Popen[bytes]], redis_url: str
) -> None:
    base, db, proc = flower
    assert httpx.get(f"{base}/", timeout=5).status_code == 401
    assert httpx.get(f"{base}/", auth=("admin", "wrong"), timeout=5).status_code == 401
    assert httpx.get(f"{base}/", auth=("admin", "pw"), timeout=5).status_code == 200
    assert httpx.get(f"{base}/healthcheck", timeout=5).status_code == 200

    # A task published now reaches Flower as a task-sent event, with the redacted arguments.
    app = make_celery(Settings(redis_url=redis_url))
    deadline = time.monotonic() + 30
    task: dict[str, Any] = {}
    while not task:
        result = app.send_task("patterns.analyze_local", args=[[1, 2, 3], {"1": PROMPT}])
        until = time.monotonic() + 3
        while not task and time.monotonic() < until:
            tasks = httpx.get(f"{base}/api/tasks", auth=("admin", "pw"), timeout=5).json()
            task = tasks.get(result.id, {})
            time.sleep(0.3)
        assert time.monotonic() < deadline, "Flower saw no task-sent event in 30 s"
    assert task["args"] == f"([3 ids: 1..3], {{'1': '<redacted {len(PROMPT)} chars>'}})"
    assert "pull request" not in json.dumps(task)

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=20) == 0
    # dbm backends name the file(s) flower.db, flower.db.db or flower.db.dat/.dir.
    assert list(db.parent.glob("flower.db*")), "no persistent state written"
    with shelve.open(str(db), flag="r") as state:
        saved = state["events"].tasks.get(result.id)
    assert saved is not None and saved.args == task["args"]


def test_flower_refuses_to_start_without_auth(
    redis_url: str, tmp_path: Path, die_with_parent: Callable[[], None]
) -> None:
    done = subprocess.run(
        [str(PATTERNS), "flower"],
        env=_env(redis_url, PATTERNS_FLOWER_DB=str(tmp_path / "flower.db")),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        preexec_fn=die_with_parent,
    )
    assert done.returncode == 2
    assert "PATTERNS_FLOWER_BASIC_AUTH" in done.stderr and "--no-auth" in done.stderr
