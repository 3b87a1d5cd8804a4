"""Small text helpers shared by prompts, parsing and relationship resolution."""

from __future__ import annotations

import re

_NON_WORD = re.compile(r"[^\w]+")


def normalize_title(title: str) -> str:
    """Case-folded title with punctuation and runs of spaces collapsed: the key titles match on.

    ``"  Retry on  Connection-Loss!"`` → ``"retry on connection loss"``.
    """
    return " ".join(_NON_WORD.sub(" ", title.casefold()).split())
