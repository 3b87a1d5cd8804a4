"""Interactions with no reusable lesson, recognised without a model: dependency bumps (by hand
or by a bot), release preparation, pull requests that only touch dependency manifests and give
no reason, git's own revert pull requests with no reason given, logo and people updates that
touch no code. Pure: no I/O.

Why rules in front of the model: measured on the shared gold (``patterns eval``, docs/QUALITY.md),
SmolLM2-135M cannot tell a trivial pull request from a lesson. Given an example of each, it
copies the shape of the last example it saw (every answer trivial, or none), whatever the
pull request says. These rules are the generic shapes of such pull requests (Dependabot's,
pyup's and pre-commit.ci's titles, git's ``Revert "..."``, requirements files), not fitted to
the gold's items; they take 13 of its 17 trivial deliveries and none of its 23 others. What
they miss (a docs wording fix, a Python version requirement) is left to the model, whose
schema admits a trivial answer too.
"""

from __future__ import annotations

import re

from pipeline.quality.signals import headline

_BUMP = re.compile(
    r"^(?:\[\S+\]\s*)?(?:bump|update|upgrade|pin)\s+\S+(?:\s+requirement)?\s+from\s+\S+\s+to\s+\S+",
    re.IGNORECASE,
)
_BOT = re.compile(
    r"pre-commit autoupdate|scheduled (?:daily|weekly|monthly) dependency update|"
    r"^\[?(?:dependabot|renovate|pyup|snyk)\b",
    re.IGNORECASE,
)
_RELEASE = re.compile(
    r"^(?:prep(?:are)?\b.*\brelease\b|release\s+v?\d+\.\d+|bump version\b"
    r"|v?\d+\.\d+(?:\.\d+)?\S*$)",
    re.IGNORECASE,
)
_PEOPLE = re.compile(r"\b(?:logo|sponsors?|contributors|authors|maintainers|codeowners)\b", re.I)
_REVERT = re.compile(r'^Revert "')
_REVERT_BODY = re.compile(r"^This reverts commit [0-9a-f]{7,40}\.?$")
_FILE = re.compile(r"^- (?P<path>.+) \(\+\d+/-\d+\)$")
_MANIFEST = re.compile(
    r"(?:^|/)(?:requirements[^/]*/.+\.(?:txt|in)|[^/]*requirements[^/]*\.(?:txt|in)|"
    r"(?:poetry|Pipfile|yarn|Cargo|Gemfile|uv)\.lock|package-lock\.json|go\.sum)$"
)
_CODE = re.compile(r"\.(?:py|pyx|c|h|js|ts|go|rs|java|rb)$")
_IMAGE = re.compile(r"\.(?:svg|png|jpe?g|gif|ico|webp)$", re.IGNORECASE)


def _sections(content: str) -> tuple[str, list[str] | None]:
    """The body (between the headline and the files block) and the changed files' paths
    (``None`` when the text lists no files, or not all of them)."""
    _, _, rest = content.partition("\n")
    body, marker, files_text = rest.partition("\nFiles changed (")
    if not marker:
        return rest.strip(), None
    paths = []
    for line in files_text.splitlines()[1:]:
        match = _FILE.match(line.strip())
        if match is None:  # "- ... and N more": not every file is known
            return body.strip(), None
        paths.append(match.group("path"))
    return body.strip(), paths or None


def trivial_reason(content: str) -> str | None:
    """Why a pull request's text (as :mod:`pipeline.intake.normalize` writes it) carries no
    reusable lesson, or ``None`` when the rules cannot tell (the model decides) or the text is
    not a pull request's."""
    title = headline(content)
    if title is None or not content.startswith("Pull request #"):
        return None  # only pull requests: an issue about a bump may well teach something
    if _BUMP.search(title) or _BOT.search(title):
        return "dependency update"
    if _RELEASE.search(title.strip()):
        return "release preparation"
    body, paths = _sections(content)
    if _REVERT.match(title) and (not body or _REVERT_BODY.match(body)):
        return "revert without a reason"
    if _PEOPLE.search(title) and paths and not any(_CODE.search(p) for p in paths):
        return "logo or people update"
    if not body and paths and all(_MANIFEST.search(p) for p in paths):
        return "dependency manifests only, no reason given"
    if paths and all(_IMAGE.search(p) for p in paths):
        return "images only"
    return None
