"""People's verdicts, the pure rules: which reactions and replies count, for which patterns and
people, and how quotes of our escaped Markdown are matched (:mod:`pipeline.github.verdicts`)."""

from __future__ import annotations

import datetime as dt
import uuid

from pipeline.db.status import ValidationResult, VerdictSource
from pipeline.github.client import IssueComment, Reaction
from pipeline.github.feedback import COMMENT_MARKER, escape_markdown, feedback_marker
from pipeline.github.verdicts import (
    OUR_MARKER,
    ListedComment,
    desired_verdicts,
    normalise,
    quoted_patterns,
    reply_verdict,
    split_reply,
)

T0 = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)
P1, P2 = uuid.UUID(int=1), uuid.UUID(int=2)
TITLES = {P1: "Retry broker connections with exponential backoff", P2: "Pin CI versions (#12)"}
CONFIRMED, CONTRADICTED = ValidationResult.CONFIRMED, ValidationResult.CONTRADICTED


def _reply(
    id_: int, body: str, minutes: float, login: str = "ann", kind: str = "User"
) -> IssueComment:
    return IssueComment(id_, body, login, kind, T0 + dt.timedelta(minutes=minutes))


def test_our_marker_is_the_start_of_every_feedback_comment() -> None:
    assert COMMENT_MARKER.startswith(OUR_MARKER) and feedback_marker("d-1").startswith(OUR_MARKER)


def test_reply_words_and_emoji() -> None:
    assert reply_verdict("👍 yes, that's it") == CONFIRMED
    assert reply_verdict(":+1:") == reply_verdict("+1") == reply_verdict("I agree") == CONFIRMED
    assert reply_verdict("👎") == reply_verdict(":-1:") == reply_verdict("-1") == CONTRADICTED
    assert reply_verdict("this is wrong here") == CONTRADICTED
    assert reply_verdict("not useful for this change") == CONTRADICTED  # not read as "useful"
    assert reply_verdict("I disagree") == CONTRADICTED  # not read as "agree"
    assert reply_verdict("useful, but wrong") is None  # both: no verdict
    assert reply_verdict("see the docs") is None
    assert reply_verdict("fixes #5-1") is None  # "-1" inside a word is not a vote


def test_quotes_of_the_escaped_table_match_the_title() -> None:
    row = f"| {escape_markdown(TITLES[P2])} | solution | 0.91 | |"
    assert "\\(" in row and "&#8203;" in row
    # GitHub's "Quote reply" quotes the rendered text; a copy of the raw Markdown works too.
    for quoted in (f"> {TITLES[P2]}", f"> {row}"):
        q, own = split_reply(f"{quoted}\n\n👍")
        assert quoted_patterns(q, TITLES) == [P2] and own.strip() == "👍"
    assert quoted_patterns("Retry broker", TITLES) == []  # a part of a title is not the title
    assert normalise("Pin&#8203; **CI**\u200b") == "pin ci"


def test_reactions_vote_on_every_listed_pattern_and_bots_do_not_count() -> None:
    ours = ListedComment(10, T0, TITLES)
    reactions = [
        Reaction(1, "+1", "ann"),
        Reaction(2, "-1", "bob"),
        Reaction(3, "+1", "cid"),
        Reaction(4, "-1", "cid"),  # both: no verdict
        Reaction(5, "heart", "dan"),  # says nothing
        Reaction(6, "+1", "ci-bot", "Bot"),
    ]
    got = desired_verdicts([ours], {10: reactions}, [])
    assert {(k[1], k[2]): v.result for k, v in got.items()} == {
        (P1, "ann"): CONFIRMED, (P2, "ann"): CONFIRMED,
        (P1, "bob"): CONTRADICTED, (P2, "bob"): CONTRADICTED,
    }  # fmt: skip
    assert all(v.source == VerdictSource.REACTION and k[0] == 10 for k, v in got.items())


def test_a_quoting_reply_overrides_the_reaction_for_its_pattern_only() -> None:
    ours = ListedComment(10, T0, TITLES)
    thread = [
        IssueComment(10, feedback_marker("d") + "\n| table |", "bot", "Bot", T0),
        _reply(20, f"> {TITLES[P1]}\n\nThis is wrong here, we never retry.", 5),
        _reply(21, "👎 to all of it", 6, login="bob"),  # quotes nothing: no verdict
        _reply(22, f"> {TITLES[P2]}\n\n+1", 7, login="bot2", kind="Bot"),
        _reply(23, feedback_marker("x") + f"\n> {TITLES[P2]}\n+1", 8, login="us"),  # ours
    ]
    got = desired_verdicts([ours], {10: [Reaction(1, "+1", "ann")]}, thread)
    assert got[(10, P1, "ann")].result == CONTRADICTED
    assert got[(10, P1, "ann")].source == VerdictSource.REPLY
    assert got[(10, P1, "ann")].source_id == 20 and "never retry" in got[(10, P1, "ann")].excerpt
    assert got[(10, P2, "ann")].result == CONFIRMED  # the reaction still stands for P2
    assert set(got) == {(10, P1, "ann"), (10, P2, "ann")}


def test_a_reply_goes_to_the_latest_earlier_comment_that_listed_the_pattern() -> None:
    first = ListedComment(10, T0, {P1: TITLES[P1]})
    second = ListedComment(11, T0 + dt.timedelta(hours=1), TITLES)
    before = _reply(20, f"> {TITLES[P1]}\n+1", 30)  # between the two comments
    after = _reply(21, f"> {TITLES[P1]}\n> {TITLES[P2]}\n-1", 90, login="bob")
    latest = _reply(22, f"> {TITLES[P1]}\n👎", 120)  # ann changes her mind
    got = desired_verdicts([second, first], {}, [latest, after, before])
    assert {k: v.result for k, v in got.items()} == {
        (10, P1, "ann"): CONFIRMED,  # "before" only knew the first comment
        (11, P1, "bob"): CONTRADICTED, (11, P2, "bob"): CONTRADICTED,
        (11, P1, "ann"): CONTRADICTED,
    }  # fmt: skip


def test_replies_are_placed_by_githubs_time_of_our_comment() -> None:
    # Our clock recorded the comment 10 minutes late; the thread shows GitHub's time.
    ours = ListedComment(10, T0 + dt.timedelta(minutes=10), TITLES)
    shown = IssueComment(10, feedback_marker("d"), "pp[bot]", "Bot", T0)
    reply = _reply(20, f"> {TITLES[P1]}\n+1", 2)
    assert desired_verdicts([ours], {}, [reply]) == {}  # without GitHub's time: too early
    got = desired_verdicts([ours], {}, [shown, reply])
    assert got[(10, P1, "ann")].result == CONFIRMED
