"""People's verdicts: reactions on our GitHub feedback comments, and replies that quote one of the
patterns a comment listed, become validations (``confirmed``) or contradictions
(``contradicted``) of those patterns.

GitHub sends no webhook for reactions, so beat polls (``patterns.github_verdicts``, every
``PATTERNS_VERDICTS_POLL_INTERVAL_S``; ``patterns github verdicts`` runs one poll now) the
feedback comments of the last ``PATTERNS_VERDICTS_WINDOW_DAYS``, one issue or pull request thread
at a time, least recently polled first: ``GET /repos/{repo}/issues/comments/{id}/reactions`` per
comment of ours, and ``GET /repos/{repo}/issues/{number}/comments?since=`` once per thread.

**What counts** (:func:`desired_verdicts`, pure):

- a 👍 (``+1``) on the comment confirms every pattern it listed, a 👎 (``-1``) contradicts them;
  a person who left both has no verdict; other reactions say nothing;
- a reply (a later comment in the thread, not ours) whose quoted lines (``> ...``, what GitHub's
  "Quote reply" writes) contain a listed pattern's title gives a verdict on that pattern only:
  👍/``:+1:``/``+1``/"agree"/"correct"/"useful"... confirm, 👎/``:-1:``/``-1``/"disagree"/
  "wrong"/"not useful"... contradict (:func:`reply_verdict`; a reply with both or neither says
  nothing). It is attributed to the latest of our comments posted before it (GitHub's times)
  that listed the pattern, and overrides the same person's reaction on that pattern (the latest
  reply wins);
- bots (``user.type`` ``Bot``) and our own comments (they carry the feedback marker) never count.

**Stored** as one ``pattern_validations`` row (``validation_type`` ``review``, ``validator``
``github:<login>``, the comment, source and URL in ``evidence``) per (comment, listed pattern,
person), recorded in the ``feedback_verdicts`` ledger, unique on that triple. Each poll
reconciles a thread's ledger with what GitHub shows now: new verdicts are added, a changed one
(👍 turned 👎) updates its validation, a withdrawn one (reaction removed, reply deleted) deletes
it; then the touched patterns' counts, strength and status are recomputed
(:func:`pipeline.store.merge.refresh`) and ``pattern.validated`` / ``pattern.contradicted``
events appended. A thread's reconciliation is one transaction (under the project's writer lock),
and GitHub is only read: polling twice changes nothing, and a poll that dies mid-way leaves
each thread either reconciled or untouched. A verdict on a pattern since merged goes to the
pattern that absorbed it (``superseded_by``).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Protocol

from pipeline.db.status import ValidationResult, VerdictSource
from pipeline.github.client import IssueComment, Reaction
from pipeline.github.feedback import COMMENT_MARKER

#: ``pattern_validations.confidence`` of a verdict: a reaction on a list, or a reply about one
#: pattern in words.
CONFIDENCE = {VerdictSource.REACTION: 0.6, VerdictSource.REPLY: 0.8}
#: Reaction content → what it says of every listed pattern.
REACTIONS = {"+1": ValidationResult.CONFIRMED, "-1": ValidationResult.CONTRADICTED}
#: The start of every feedback comment of ours (the marker before its delivery id).
OUR_MARKER = COMMENT_MARKER.split("{", 1)[0]
#: Normalised titles shorter than this are not matched in quotes (too likely by chance).
MIN_TITLE_CHARS = 8

_NEGATIVE = re.compile(
    r"👎|:-1:|:thumbsdown:|(?<![\w+-])-1\b|\bdisagree\b|\bwrong\b|\bincorrect\b|\birrelevant\b"
    r"|\bnot (?:really )?(?:useful|helpful|relevant|right|correct|applicable)\b"
    r"|\bdoes(?:n't| not) apply\b",
    re.IGNORECASE,
)
_POSITIVE = re.compile(
    r"👍|:\+1:|:thumbsup:|(?<![\w+-])\+1\b|\bagree\b|\bcorrect\b|\buseful\b|\bhelpful\b"
    r"|\brelevant\b|\bexactly\b|\bgood (?:catch|call|point)\b",
    re.IGNORECASE,
)
_ENTITY = re.compile(r"&#?\w+;")
_WORDS = re.compile(r"[^\w]+")


def normalise(text: str) -> str:
    """Text as quotes are compared: HTML entities (the zero-width spaces and escapes of our
    comments) and every run of non-word characters (Markdown backslashes, pipes, punctuation,
    whitespace) become one space, lower-cased, trimmed."""
    return _WORDS.sub(" ", _ENTITY.sub(" ", text.replace("\u200b", ""))).strip().lower()


def split_reply(body: str) -> tuple[str, str]:
    """(quoted text, own text) of a reply: its lines starting with ``>`` (the marks removed)
    and the rest."""
    quoted, own = [], []
    for line in body.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(">"):
            quoted.append(stripped.lstrip("> "))
        else:
            own.append(line)
    return "\n".join(quoted), "\n".join(own)


def reply_verdict(text: str) -> ValidationResult | None:
    """What a reply's own text (not its quote) says: ``contradicted`` for a negative word or
    emoji only, ``confirmed`` for a positive one only, else ``None`` (neither, or both). A
    negative phrase such as "not useful" is not read as positive."""
    negative = bool(_NEGATIVE.search(text))
    positive = bool(_POSITIVE.search(_NEGATIVE.sub(" ", text)))
    if negative == positive:
        return None
    return ValidationResult.CONTRADICTED if negative else ValidationResult.CONFIRMED


def quoted_patterns(quoted: str, titles: Mapping[uuid.UUID, str]) -> list[uuid.UUID]:
    """The patterns (id → title) whose normalised title, at least :data:`MIN_TITLE_CHARS` long,
    appears in the normalised ``quoted`` text, in ``titles`` order."""
    text = f" {normalise(quoted)} "
    found = []
    for pid, title in titles.items():
        key = normalise(title)
        if len(key) >= MIN_TITLE_CHARS and f" {key} " in text:
            found.append(pid)
    return found


@dataclass(frozen=True)
class ListedComment:
    """A feedback comment of ours as the poll needs it: id, when posted (aware), and the
    patterns it listed (id → title, in table order, patterns that still exist)."""

    comment_id: int
    posted_at: dt.datetime
    patterns: Mapping[uuid.UUID, str]


@dataclass(frozen=True)
class Verdict:
    """One person's verdict on one listed pattern: ``result``, where it came from (``source``,
    ``source_id``: the reaction's or reply's id) and the reply's URL-less ``excerpt``."""

    result: ValidationResult
    source: VerdictSource
    source_id: int
    excerpt: str = ""


#: (our comment id, listed pattern id, login) → verdict.
VerdictKey = tuple[int, uuid.UUID, str]


def desired_verdicts(
    comments: Sequence[ListedComment],
    reactions: Mapping[int, Sequence[Reaction]],
    thread: Sequence[IssueComment],
) -> dict[VerdictKey, Verdict]:
    """Every verdict a thread's reactions and replies give now (module notes). Pure.

    Args:
        comments: our feedback comments in the thread.
        reactions: comment id → its reactions.
        thread: the thread's comments (ours among them), any order.
    """
    out: dict[VerdictKey, Verdict] = {}
    for comment in comments:
        votes: dict[str, set[ValidationResult]] = {}
        first: dict[str, int] = {}
        for r in reactions.get(comment.comment_id, ()):
            if r.user_type == "Bot" or not r.login or r.content not in REACTIONS:
                continue
            votes.setdefault(r.login, set()).add(REACTIONS[r.content])
            first.setdefault(r.login, r.id)
        for login, results in votes.items():
            if len(results) == 1:
                (said,) = results
                for pid in comment.patterns:
                    out[(comment.comment_id, pid, login)] = Verdict(
                        said, VerdictSource.REACTION, first[login]
                    )
    # GitHub's own time of our comments, where the thread shows them (our clock may differ).
    shown = {c.id: c.created_at for c in thread if c.created_at is not None}
    ordered = sorted(
        (replace(c, posted_at=shown.get(c.comment_id) or c.posted_at) for c in comments),
        key=lambda c: (c.posted_at, c.comment_id),
    )
    for reply in sorted(
        thread, key=lambda c: (c.created_at or dt.datetime.min.replace(tzinfo=dt.UTC), c.id)
    ):
        if _ignored(reply):
            continue
        quoted, own = split_reply(reply.body)
        result = reply_verdict(own) if quoted else None
        if result is None:
            continue
        for pid, comment in _attributed(ordered, reply, quoted):
            excerpt = " ".join(own.split())[:200]
            out[(comment.comment_id, pid, reply.login)] = Verdict(
                result, VerdictSource.REPLY, reply.id, excerpt
            )
    return out


def _ignored(reply: IssueComment) -> bool:
    return (
        not reply.login
        or reply.user_type == "Bot"
        or reply.body.lstrip().startswith(OUR_MARKER)
        or reply.created_at is None
    )


def _attributed(
    ordered: Sequence[ListedComment], reply: IssueComment, quoted: str
) -> Iterator[tuple[uuid.UUID, ListedComment]]:
    """For each pattern the reply quotes, the latest of our comments before it listing it."""
    assert reply.created_at is not None
    latest: dict[uuid.UUID, ListedComment] = {}
    for comment in ordered:
        if comment.posted_at > reply.created_at or comment.comment_id == reply.id:
            continue
        for pid in quoted_patterns(quoted, comment.patterns):
            latest[pid] = comment
    yield from latest.items()


class VerdictsClient(Protocol):
    """The part of GitHub's REST API the poll needs (:class:`~.client.HttpxGitHubClient`)."""

    def issue_comments(
        self, repo: str, number: int, *, since: dt.datetime | None = None
    ) -> Iterator[IssueComment]:
        """The thread's comments updated since ``since``, oldest first."""
        ...

    def comment_reactions(self, repo: str, comment_id: int) -> Iterator[Reaction]:
        """The reactions on comment ``comment_id``."""
        ...


@dataclass
class PollSummary:
    """What a poll did: ``threads`` reconciled, ``comments`` of ours read, verdicts ``added``,
    ``changed`` and ``withdrawn``, ``patterns`` whose standing was recomputed, threads that
    failed (``errors``, one line each in ``messages``); ``rate_limited`` stopped the poll
    (``retry_after_s`` when GitHub said); ``locked_out``: another poll was running."""

    threads: int = 0
    comments: int = 0
    added: int = 0
    changed: int = 0
    withdrawn: int = 0
    patterns: int = 0
    errors: int = 0
    rate_limited: bool = False
    retry_after_s: float | None = None
    locked_out: bool = False
    messages: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return asdict(self)
