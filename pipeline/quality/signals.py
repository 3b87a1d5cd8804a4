"""Label-free quality signals of one extracted pattern, computed from its interaction's text
alone: is its evidence found in the text (*grounding*), and is its title a restatement of the
pull request's or issue's title (*title copy*). Pure functions, no I/O.

They are stored on every pattern (``patterns.evidence_grounded``, ``patterns.title_copy``) and
summed up by ``patterns report`` and ``/metrics``, so quality drift shows without labels; the
same functions score ``patterns eval`` (``grounding_rate``, ``title_copy_rate``).
"""

from __future__ import annotations

import difflib
import re

from pipeline.text import normalize_title

#: First line of a pull request, issue or comment as :mod:`pipeline.intake.normalize` writes it.
_HEADLINE = re.compile(
    r"^(?:Pull request|Issue) #\S*: (?P<title>.+)$|^Comment on (?:pull request|issue) #\S* "
    r"\((?P<ctitle>.+)\):$"
)

#: difflib ratio of the normalised titles from which a pattern title counts as a copy of the
#: interaction's title. Chosen on the shared gold (docs/QUALITY.md): its 26 hand-written titles,
#: every one a generalised lesson, score 0.19-0.79 against their pull requests' titles (median
#: 0.50, measured with :func:`title_similarity`); a copy that differs by a prefix or a word
#: ("fix: clear the timer..." against "Clear the timer...") scores above 0.9. 0.85 keeps the
#: closest honest rewording (0.79) out.
TITLE_COPY_RATIO = 0.85

#: Evidence shorter than this (after normalising) is not counted as grounded: a word or two is
#: found in almost any text.
MIN_EVIDENCE_CHARS = 8


def headline(content: str) -> str | None:
    """The title of the pull request or issue an interaction's ``content`` starts with
    (``"Pull request #12: <title>"``), or ``None`` for other text (a conversation)."""
    first = content.split("\n", 1)[0].strip()
    match = _HEADLINE.match(first)
    if match is None:
        return None
    return match.group("title") or match.group("ctitle")


def _squash(text: str) -> str:
    """Case-folded, whitespace runs collapsed: evidence may differ from the text in spacing,
    line breaks and case only."""
    return " ".join(text.casefold().split())


def is_grounded(evidence: str, content: str) -> bool:
    """Whether ``evidence`` is quoted from ``content``: a substring of it after case folding
    and collapsing whitespace, at least :data:`MIN_EVIDENCE_CHARS` long. The gold's evidence is
    verbatim (``../shared/data/github/README.md``): all 26 of its strings pass."""
    quoted = _squash(evidence).strip(" .\"'`")
    return len(quoted) >= MIN_EVIDENCE_CHARS and quoted in _squash(content)


def title_similarity(title: str, other: str) -> float:
    """difflib ratio (0-1) of the two titles after :func:`pipeline.text.normalize_title`."""
    return difflib.SequenceMatcher(None, normalize_title(title), normalize_title(other)).ratio()


def is_title_copy(title: str, content: str) -> bool:
    """Whether a pattern ``title`` restates the title of the interaction (``content``'s
    headline): :func:`title_similarity` at least :data:`TITLE_COPY_RATIO`, or the pattern's
    normalised title is contained in the headline's. False when the content has no headline."""
    source = headline(content)
    if source is None:
        return False
    mine, theirs = normalize_title(title), normalize_title(source)
    if len(mine) >= MIN_EVIDENCE_CHARS and mine in theirs:
        return True
    return title_similarity(title, source) >= TITLE_COPY_RATIO
