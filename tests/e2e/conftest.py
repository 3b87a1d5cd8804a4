"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture()
def data_dir() -> Iterator[Path]:
    """A data folder the embedded server's own user can enter (pytest's tmp_path is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="pt-e2e-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)
