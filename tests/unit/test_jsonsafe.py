"""Bad input made storable or refused (pure): the JSON rules, the normaliser's backstop, routing
that never raises on stored metadata, and the webhook gate."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pipeline.api.deps import Gate
from pipeline.errors import MalformedInputError
from pipeline.intake.jsonsafe import (
    MAX_DEPTH,
    JsonTooDeepError,
    UnsafeJsonError,
    dotted,
    load_json,
    safe_text,
    sanitize_json,
)
from pipeline.intake.normalize import (
    MAX_NAME_CHARS,
    NormalizedInteraction,
    SkippedDelivery,
    normalize_delivery,
    normalize_interaction,
)
from pipeline.spend.routing import complexity, complexity_features, priority_of
from pipeline.types import Priority


def _nested(levels: int) -> Any:
    value: Any = 1
    for _ in range(levels):
        value = [value]
    return value


def test_unstorable_characters_become_the_replacement_character() -> None:
    assert safe_text("a\x00b\ud800c\udfff") == "a\ufffdb\ufffdc\ufffd"
    clean = "no problem \U0001f600 é"
    assert safe_text(clean) is clean
    parsed = json.loads('{"k\\u0000": ["\\ud83d", "\\ud83d\\ude00", "x\\u0000"]}')
    assert sanitize_json(parsed) == {"k\ufffd": ["\ufffd", "\U0001f600", "x\ufffd"]}


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ('{"a": NaN}', ("a",)),
        ('{"a": [1, Infinity]}', ("a", 1)),
        ('{"a": {"b": -Infinity}}', ("a", "b")),
        ('{"a": 1e999}', ("a",)),
        (f'{{"a": {2**63}}}', ("a",)),
        (f'{{"a": {-(2**63) - 1}}}', ("a",)),
        (f"[{10**400}]", (0,)),
    ],
)
def test_unusable_numbers_are_refused_with_their_path(raw: str, loc: tuple[Any, ...]) -> None:
    with pytest.raises(UnsafeJsonError) as caught:
        load_json(raw)
    assert caught.value.loc == loc
    assert isinstance(caught.value, MalformedInputError)


def test_64_bit_integers_and_finite_floats_pass() -> None:
    doc = {"a": 2**63 - 1, "b": -(2**63), "c": 1e308, "d": True, "e": None, "f": -0.0}
    assert load_json(json.dumps(doc)) == doc


def test_lenient_mode_keeps_unusable_numbers_as_strings_and_drops_deep_values() -> None:
    value = {"n": float("nan"), "big": 10**30, "deep": _nested(MAX_DEPTH + 5)}
    out = sanitize_json(value, strict=False)
    assert out["n"] == "nan" and out["big"] == str(10**30)
    inner = out["deep"]
    for _ in range(MAX_DEPTH - 2):
        inner = inner[0]
    assert inner == [None]


def test_nesting_is_limited_to_max_depth_levels() -> None:
    assert load_json(json.dumps(_nested(MAX_DEPTH))) == _nested(MAX_DEPTH)
    with pytest.raises(JsonTooDeepError) as caught:
        load_json(json.dumps(_nested(MAX_DEPTH + 1)))
    assert len(caught.value.loc) == MAX_DEPTH and isinstance(caught.value, ValueError)
    with pytest.raises(JsonTooDeepError):  # so deep that the parser itself gives up
        load_json("[" * 200_000 + "]" * 200_000)


def test_paths_are_readable_and_bounded() -> None:
    assert dotted(("pull_request", "labels", 0, "name")) == "pull_request.labels[0].name"
    assert dotted(()) == "<root>"
    assert len(dotted(("k" * 500,))) == 203


def test_normalised_records_are_storable_whatever_the_input() -> None:
    item = normalize_interaction({
        "project": "p\x00", "content": "c\ud800", "author": "a\x00",
        "metadata": {"k\x00": float("inf"), "n": 10**400},
    })  # fmt: skip
    assert (item.project, item.content, item.author) == ("p\ufffd", "c\ufffd", "a\ufffd")
    assert item.metadata == {"k\ufffd": "inf", "n": str(10**400)}
    assert item.content_hash  # encodable
    direct = NormalizedInteraction(
        project="x", source="api", kind="k\x00", content="y", idempotency_key="z\ud800"
    )
    assert (direct.kind, direct.idempotency_key) == ("k\ufffd", "z\ufffd")
    skipped = SkippedDelivery("d", "e\x00", "a", "r", project="p\ud800")
    assert (skipped.event, skipped.project) == ("e\ufffd", "p\ufffd")


def _pr(**repo: Any) -> dict[str, Any]:
    return {
        "action": "opened",
        "repository": {"full_name": "o/r", **repo},
        "pull_request": {"title": "t", "body": "b\x00", "user": {"login": "u" * 300}},
    }


def test_text_fields_holding_other_json_types_are_dropped() -> None:
    """Found by the fuzz test: a list in ``html_url`` reached Postgres as an array (a 500)."""
    payload = _pr()
    payload["pull_request"]["html_url"] = [[], True, [True, False, None]]
    item = normalize_delivery("pull_request", "d", payload)
    assert isinstance(item, NormalizedInteraction) and item.external_id is None
    odd: Any = 5
    direct = NormalizedInteraction(
        project="p", source="api", kind=odd, content="c", idempotency_key="k", author=odd
    )
    assert (direct.kind, direct.author) == ("5", None)


def test_deliveries_drop_out_of_range_repository_ids_and_long_logins() -> None:
    item = normalize_delivery("pull_request", "d", _pr(id=2**70))
    assert isinstance(item, NormalizedInteraction)
    assert item.github_repo_id is None and item.author is None and "b\ufffd" in item.content
    assert normalize_delivery("pull_request", "d", _pr(id=True)).github_repo_id is None
    kept = normalize_delivery("pull_request", "d", _pr(id=2**63 - 1))
    assert kept.github_repo_id == 2**63 - 1
    with pytest.raises(MalformedInputError, match="full_name"):
        normalize_delivery("pull_request", "d", _pr(full_name="x" * (MAX_NAME_CHARS + 1)))


@pytest.mark.parametrize(
    "metadata",
    [
        {"changed_files": 10**400},
        {"additions": 10**400, "deletions": 10**400},
        {"changed_files": -(10**400), "files": 10**400},
        {"changed_files": 2**53 + 1, "additions": "12", "deletions": 1.5},
        {"changed_files": True},
        [1, 2, 3],
        "not an object",
        None,
    ],
)
def test_routing_treats_unusable_metadata_as_absent(metadata: Any) -> None:
    text = "Fix the retry loop"
    assert complexity(text, metadata) == complexity(text, {})
    features = complexity_features(text, metadata)
    assert (features.files, features.lines_changed) == (0, 0)
    assert priority_of(metadata) is Priority.NORMAL


def test_routing_still_reads_usable_metadata() -> None:
    assert complexity_features("x", {"changed_files": 2**53}).files == 2**53
    assert complexity("x", {"changed_files": 2**53, "additions": 2**53}) > complexity("x", {})
    assert priority_of({"priority": "emergency"}) is Priority.EMERGENCY


def test_the_gate_admits_up_to_its_limit() -> None:
    gate = Gate(2)
    assert gate.enter() and gate.enter() and not gate.enter()
    gate.leave()
    assert gate.enter() and gate.held == 2
