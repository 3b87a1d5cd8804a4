"""A quiet terminal for commands that load the models: vLLM's, torch's and transformers' output
goes to a log file, the terminal keeps the progress bars and the summary.

Python-level logging settings are not enough: vLLM's engine runs in child processes (``VLLM::
EngineCore``, ``VLLM::Worker``) that write to the file descriptors 1 and 2 they inherit, and
torch's C++ warnings bypass Python altogether. So :func:`engine_output` points the descriptors
themselves at the log file (``os.dup2``) for as long as the engines live; everything written
there meanwhile (vLLM's and transformers' loggers, ``warnings``, tqdm bars, structlog lines) lands
in the file. The terminal stays reachable through a :class:`rich.console.Console` bound to a
duplicate of the original stderr, taken before the redirect.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console

#: File name of a run's log under the log folder; ``{stamp}`` is the local start time
#: (``YYYYmmdd-HHMMSS``), ``{pid}`` keeps two runs started in the same second apart.
LOG_NAME = "run-{stamp}-{pid}.log"


#: ``Console.print`` options for a line holding a path: no markup, no wrapping (copyable).
_PLAIN: dict[str, Any] = {"markup": False, "highlight": False, "soft_wrap": True}


@dataclass(frozen=True)
class Terminal:
    """Where a command writes for people while :func:`engine_output` is active.

    Attributes:
        console: a console on the terminal's stderr (the original one, not the log file).
        log_path: the log file engine output goes to; None when it stays on the terminal
            (``--verbose``).
    """

    console: Console
    log_path: Path | None

    @property
    def quiet(self) -> bool:
        """Whether engine output is kept off the terminal."""
        return self.log_path is not None


def log_file(log_dir: Path, now: dt.datetime | None = None) -> Path:
    """The path of a new run log in ``log_dir`` (not created), named by :data:`LOG_NAME`."""
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return log_dir / LOG_NAME.format(stamp=stamp, pid=os.getpid())


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        with suppress(OSError, ValueError):  # closed or detached: nothing to flush
            stream.flush()


@contextmanager
def redirect_fds(path: Path) -> Iterator[TextIO]:
    """Point file descriptors 1 and 2 at ``path`` (appended to, created with its folders) for
    the ``with`` block; yields a text stream on the original stderr. Child processes started
    inside the block inherit the file and keep writing to it after the block ends.

    Python's ``sys.stdout`` and ``sys.stderr`` are flushed before and after, so what was written
    before the block reaches the terminal and what was written inside it reaches the file.

    Raises:
        OSError: the file cannot be created or the descriptors cannot be duplicated.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _flush()
    saved = (os.dup(1), os.dup(2))
    terminal = os.fdopen(os.dup(saved[1]), "w", buffering=1, encoding="utf-8", errors="replace")
    try:
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        yield terminal
    finally:
        _flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log_fd):
            os.close(fd)
        terminal.close()


@contextmanager
def engine_output(log_dir: Path, *, verbose: bool, console: Console) -> Iterator[Terminal]:
    """Send engine output (everything written to descriptors 1 and 2, child processes
    included) to a new log file in ``log_dir`` for the ``with`` block, and print its path once
    on ``console``. With ``verbose`` nothing is redirected and ``console`` is yielded as is.

    vLLM's own log level is raised to INFO in the file (unless ``VLLM_LOGGING_LEVEL`` is set):
    it costs the terminal nothing and says what the engine did. Where the file cannot be
    created, that is said on ``console`` and nothing is redirected.
    """
    path = log_file(log_dir)
    if not verbose:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
        except OSError as exc:
            console.print(f"cannot write {path} ({exc}): engine output stays here", **_PLAIN)
            verbose = True
    if verbose:
        yield Terminal(console=console, log_path=None)
        return
    console.print(f"engine logs: {path}", style="dim", **_PLAIN)
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "INFO")
    with redirect_fds(path) as terminal:
        out = Console(file=terminal)
        try:
            yield Terminal(console=out, log_path=path)
        except BaseException:
            out.print(f"stopped; engine output is in {path}", style="red", **_PLAIN)
            raise
