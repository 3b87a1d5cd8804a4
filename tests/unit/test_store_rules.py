"""The pattern store's pure rules: strength, status, the identifier guard on embedding merges,
edge accumulation, listing cursors and the live feed's notification parsing."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid

import pytest

from pipeline.db.status import ValidationStatus
from pipeline.errors import MalformedInputError
from pipeline.store.browse import decode_cursor, encode_cursor
from pipeline.store.lifecycle import (
    identifiers,
    may_merge_by_embedding,
    pattern_strength,
    validation_status,
    wilson_lower_bound,
)
from pipeline.store.live import Feed
from pipeline.store.merge import noisy_or


def test_wilson_lower_bound_matches_the_formula() -> None:
    # Worked by hand: 1 of 1 at z=1.96 is 1/(1 + 1.96^2) = 0.2065.
    assert wilson_lower_bound(1, 1) == pytest.approx(0.2065, abs=1e-4)
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(5, 10) < 0.5 < wilson_lower_bound(50, 60)


def test_strength_grows_with_confirmations_and_falls_with_contradictions() -> None:
    grown = [pattern_strength(c, 0) for c in range(0, 30)]
    assert grown == sorted(grown) and len(set(grown)) == len(grown)
    assert grown[0] == pytest.approx(0.2065, abs=1e-4) and grown[19] > 0.8
    assert pattern_strength(5, 2) < pattern_strength(5, 0)
    assert pattern_strength(5, 5) < pattern_strength(1, 0) < 1
    # The same share ranks higher with more evidence.
    assert pattern_strength(9, 0) > pattern_strength(1, 0)


@pytest.mark.parametrize(
    ("confirmations", "contradictions", "expected"),
    [
        (0, 0, ValidationStatus.PENDING),
        (1, 0, ValidationStatus.PENDING),
        (2, 0, ValidationStatus.VALIDATED),
        (9, 1, ValidationStatus.VALIDATED),
        (2, 3, ValidationStatus.CONTRADICTED),  # 3 of 6 pieces of evidence
        (0, 1, ValidationStatus.CONTRADICTED),  # 1 of 2
        (3, 1, ValidationStatus.VALIDATED),  # 1 of 5
    ],
)
def test_validation_status(confirmations: int, contradictions: int, expected: str) -> None:
    got = validation_status(
        confirmations, contradictions, min_confirmations=2, contradiction_share=0.5
    )
    assert got == expected


@pytest.mark.parametrize(
    ("a", "b", "merge"),
    [
        ("Handle TS2322 by widening the type", "Handle TS2345 by widening the type", False),
        ("Follow-up to #5688", "Follow-up to #5689", False),
        ("Upgrade to kombu 5.3.0", "Upgrade to kombu 5.4.0", False),
        ("Retry with backoff", "Retry with exponential backoff", True),
        ("Fix TS2322 in forms", "Fix ts2322 in the forms", True),
        ("Use UTF-8 everywhere", "Use utf-8 everywhere", True),
    ],
)
def test_titles_that_name_other_identifiers_never_merge_on_distance(
    a: str, b: str, merge: bool
) -> None:
    assert may_merge_by_embedding(a, b) is merge
    assert may_merge_by_embedding(b, a) is merge


def test_identifiers_are_found_case_insensitively() -> None:
    assert identifiers("Fix TS2322 in #5688 for v2.1.0") == {"ts2322", "#5688", "v2.1.0"}
    assert identifiers("Retry broker connections") == frozenset()


def test_noisy_or_accumulates_independent_evidence() -> None:
    assert noisy_or(0.5, 0.5) == 0.75
    assert noisy_or(0.0, 0.3) == 0.3
    assert noisy_or(0.9, 0.9) == pytest.approx(0.99)


def test_cursors_round_trip_and_strangers_are_refused() -> None:
    when = dt.datetime(2026, 12, 3, 21, 0, 0, 123456, tzinfo=dt.UTC)
    pid = uuid.uuid4()
    assert decode_cursor(encode_cursor(when, pid)) == (when, pid)
    for bad in ("nope", "bm9wZQ", "!!!"):
        with pytest.raises(MalformedInputError):
            decode_cursor(bad)


def test_the_feed_wakes_only_the_named_projects_readers() -> None:
    async def scenario() -> tuple[bool, bool]:
        feed = Feed("postgresql://unused")
        a, b = uuid.uuid4(), uuid.uuid4()
        with feed.subscribe(a) as wake_a, feed.subscribe(b) as wake_b:
            feed.notify(json.dumps({"project_id": str(a), "id": 7}))
            feed.notify("not json")  # ignored, does not raise
            feed.notify(json.dumps({"id": 8}))
            return wake_a.is_set(), wake_b.is_set()

    assert asyncio.run(scenario()) == (True, False)


def test_sessions_connect_as_the_application_role(clean_env: pytest.MonkeyPatch) -> None:
    from pydantic import SecretStr
    from sqlalchemy import make_url

    from pipeline.db.engine import ALL_PROJECTS, ProjectScope, app_url, scope_parameters
    from pipeline.settings import Settings

    embedded = "postgresql+psycopg://postgres:@/postgres?host=/tmp/pg"
    # Embedded: the same server, as patterns_app (it trusts local connections).
    joined = make_url(app_url(Settings(), embedded))
    assert (joined.username, joined.database, joined.query["host"]) == (
        "patterns_app", "postgres", "/tmp/pg",
    )  # fmt: skip
    # External with a login of the role: that URL.
    login = Settings(
        database_url="postgresql://owner:pw@db/patterns",
        app_database_url=SecretStr("postgresql://patterns_app:s3@db/patterns"),
    )
    assert app_url(login, "x") == "postgresql+psycopg://patterns_app:s3@db/patterns"
    # External with one URL: the owner's, which switches role per transaction.
    owner = "postgresql+psycopg://owner:pw@db/patterns"
    assert app_url(Settings(database_url="postgresql://owner:pw@db/patterns"), owner) == owner
    project = uuid.uuid4()
    assert scope_parameters(ProjectScope(project)) == {
        "role": "patterns_app", "project": str(project), "all": "off"
    }  # fmt: skip
    assert scope_parameters(ALL_PROJECTS) == {"role": "patterns_app", "project": "", "all": "on"}
