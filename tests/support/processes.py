"""Long-lived test processes (workers, model servers) in their own process groups: started so
a signal to the group reaches all of them and none outlives the test run, stopped as a group."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

PATTERNS = Path(sys.executable).with_name("patterns")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on at the moment of the call."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_group(
    argv: Sequence[str], env: dict[str, str] | None, log: Path, preexec: Callable[[], None]
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (its own process group) with stdout and stderr in
    ``log``; ``preexec`` runs in the child first (the tests' ``die_with_parent``)."""
    return subprocess.Popen(
        list(argv), env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True, preexec_fn=preexec,
    )  # fmt: skip


def start_worker(
    env: dict[str, str], log: Path, preexec: Callable[[], None], role: str = "extract"
) -> subprocess.Popen[bytes]:
    """``patterns worker --role ROLE`` in its own process group (:func:`start_group`)."""
    return start_group([str(PATTERNS), "worker", "--role", role], env, log, preexec)


def stop_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to ``proc``'s process group and wait up to 60 s, then SIGKILL the group and
    wait up to 30 s. Nothing happens when it has exited already."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
