"""``patterns run``'s quiet terminal (:mod:`pipeline.cli.quiet`): what a child process and this
process write to file descriptors 1 and 2 inside :func:`engine_output` lands in the log file;
the yielded console still reaches the terminal's stderr. The real ``patterns run`` is checked in
``tests/e2e/test_cli_run.py``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from pipeline.cli.quiet import engine_output

pytestmark = pytest.mark.integration

#: A child process writing through Python's streams and straight to the descriptor.
CHILD = (
    "import os, sys; print('child stdout'); sys.stderr.write('child stderr\\n'); "
    "os.write(2, b'child fd 2\\n')"
)


def test_engine_output_goes_to_the_log_and_the_console_to_the_terminal(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    print("before", flush=True)
    with engine_output(tmp_path / "logs", verbose=False, console=Console(stderr=True)) as out:
        assert out.quiet and out.log_path is not None
        subprocess.run([sys.executable, "-c", CHILD], check=True)
        # (pytest swaps sys.stdout for its own object: this process writes to the descriptor.)
        os.write(1, b"raw fd 1\n")
        out.console.print("progress line")
    print("after", flush=True)
    stdout, stderr = capfd.readouterr()
    log = out.log_path.read_text()
    for line in ("child stdout", "child stderr", "child fd 2", "raw fd 1"):
        assert line in log, line
        assert line not in stdout + stderr, line
    assert out.log_path.parent == tmp_path / "logs"
    assert stdout == "before\nafter\n"
    assert f"engine logs: {out.log_path}\n" in stderr
    assert "progress line" in stderr and "progress line" not in log


def test_verbose_leaves_the_terminal_alone(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    with engine_output(tmp_path / "logs", verbose=True, console=Console(stderr=True)) as out:
        subprocess.run([sys.executable, "-c", CHILD], check=True)
    stdout, stderr = capfd.readouterr()
    assert out.log_path is None and not (tmp_path / "logs").exists()
    assert "child stdout" in stdout and "child fd 2" in stderr
