"""The label-free signals (pipeline.quality.signals): the headline of an interaction's text,
evidence grounding and title copying, on hand-made text."""

from __future__ import annotations

import pytest

from pipeline.quality.signals import (
    TITLE_COPY_RATIO,
    headline,
    is_grounded,
    is_title_copy,
    title_similarity,
)

PR = (
    "Pull request #5688: fix: clear the timer while catch the exception\n\n"
    "When the  loop breaks,\nthe timer fired later.\n\nFiles changed (1):\n- celery/x.py (+3/-1)"
)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (PR, "fix: clear the timer while catch the exception"),
        ("Issue #12: Worker hangs on restart\n\nbody", "Worker hangs on restart"),
        ("Comment on pull request #3 (Add a setting):\n\nLooks good", "Add a setting"),
        ("a plain conversation", None),
        ("", None),
    ],
)
def test_headline(content: str, expected: str | None) -> None:
    assert headline(content) == expected


@pytest.mark.parametrize(
    ("evidence", "grounded"),
    [
        ("clear the timer while catch the exception", True),
        ("CLEAR the timer  while catch", True),  # case and spacing do not matter
        ("When the loop breaks, the timer fired later.", True),  # across a line break
        ('"the timer fired later"', True),  # quotes around a quote
        ("the timer is cancelled on every path", False),  # invented
        ("timer", False),  # too short to mean anything
        ("", False),
    ],
)
def test_is_grounded(evidence: str, grounded: bool) -> None:
    assert is_grounded(evidence, PR) is grounded


@pytest.mark.parametrize(
    ("title", "copy"),
    [
        ("fix: clear the timer while catch the exception", True),
        ("Clear the timer while catch the exception", True),  # prefix dropped
        ("clear the timer", True),  # a piece of the title
        ("Clear timers in every exception path", False),  # the gold's lesson
        ("Cancel pending timers on errors", False),
    ],
)
def test_is_title_copy(title: str, copy: bool) -> None:
    assert is_title_copy(title, PR) is copy


def test_no_headline_no_copy() -> None:
    assert not is_title_copy("Anything at all", "a plain conversation")


def test_title_similarity_is_normalised() -> None:
    assert title_similarity("Fix #5688!", "fix 5688") == 1.0
    assert title_similarity("abc", "xyz") < TITLE_COPY_RATIO
