"""Fixtures for the unit tests: real input files from ``../shared/data``, read-only, no services.

The shared data sits beside the checkout (``/work/shared`` next to ``/work/main``); tests that need
it skip with the path they looked for when it is missing.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
GITHUB_DATA = SHARED_DATA / "github"
OCTOKIT = GITHUB_DATA / "octokit-payload-examples"
CELERY_CORPUS = GITHUB_DATA / "celery-pull-requests.jsonl.gz"

#: How many lines of the celery corpus the unit tests read.
CELERY_LINES = 40


@pytest.fixture(scope="session")
def octokit_dir() -> Path:
    """The octokit/webhooks example payloads folder."""
    if not OCTOKIT.is_dir():
        pytest.skip(f"octokit payload examples not found at {OCTOKIT} (../shared missing?)")
    return OCTOKIT


@pytest.fixture(scope="session")
def octokit(octokit_dir: Path) -> Callable[[str], dict[str, Any]]:
    """Load one example payload by its path under the examples folder, e.g.
    ``"pull_request/opened.payload.json"``. Each call returns a fresh copy."""

    def load(relative: str) -> dict[str, Any]:
        path = octokit_dir / relative
        if not path.is_file():
            pytest.skip(f"octokit example {path} not found")
        return json.loads(path.read_text(encoding="utf-8"))

    return load


@pytest.fixture(scope="session")
def celery_corpus() -> Path:
    """The gzipped celery pull-request deliveries."""
    if not CELERY_CORPUS.is_file():
        pytest.skip(f"celery corpus not found at {CELERY_CORPUS} (../shared missing?)")
    return CELERY_CORPUS


@pytest.fixture(scope="session")
def celery_lines(celery_corpus: Path) -> list[str]:
    """The first :data:`CELERY_LINES` raw lines of the celery corpus."""
    with gzip.open(celery_corpus, "rt", encoding="utf-8") as fh:
        return list(islice(fh, CELERY_LINES))


@pytest.fixture()
def celery_records(celery_lines: list[str]) -> list[dict[str, Any]]:
    """The first lines of the celery corpus, parsed (fresh objects per test)."""
    return [json.loads(line) for line in celery_lines]
