"""Unit tests of the pure parts of extraction: output schema, parsing and cleaning, retry policy,
relationship resolution, prompt building and title normalisation. No model, no database."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from pipeline.errors import ModelOutputError, PipelineError
from pipeline.extract.batch import MAX_ATTEMPTS, extraction_key, parse_output, retry_decision
from pipeline.extract.prompts import (
    EXAMPLE_ASSISTANT,
    EXAMPLE_TITLES,
    EXAMPLE_USER,
    PROMPT_VERSION,
    SYSTEM,
    extraction_messages,
)
from pipeline.extract.relationships import ResolvedRelationship, resolve_relationships
from pipeline.extract.schemas import (
    SCHEMA_VERSION,
    ExtractedRelationship,
    ExtractionResult,
    extraction_json_schema,
)
from pipeline.settings import Settings
from pipeline.text import normalize_title


def pattern(title: str = "Retry broker connection", **overrides: Any) -> dict[str, Any]:
    return {
        "type": "error_handling",
        "title": title,
        "description": "Reconnect instead of hanging when the broker restarts.",
        "confidence": 0.8,
        "evidence": "adds a retry loop",
        **overrides,
    }


def relationship(source: str, target: str, **overrides: Any) -> dict[str, Any]:
    return {
        "source": source,
        "target": target,
        "type": "depends_on",
        "strength": 0.6,
        "confidence": 0.7,
        **overrides,
    }


def output(
    patterns: list[dict[str, Any]], relationships: list[dict[str, Any]] | None = None
) -> str:
    body: dict[str, Any] = {"patterns": patterns}
    if relationships is not None:
        body["relationships"] = relationships
    return json.dumps(body)


@pytest.fixture()
def settings(clean_env: pytest.MonkeyPatch) -> Settings:
    """Default settings, isolated from the environment and any ``.env``."""
    return Settings()


# --- normalize_title ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("  Retry on  Connection-Loss!", "retry on connection loss"),
        ("Reconnect with exponential backoff", "reconnect with exponential backoff"),
        ("RECONNECT with exponential-backoff.", "reconnect with exponential backoff"),
        ("use `task_acks_late` (always)", "use task_acks_late always"),
        ("Straße cache", "strasse cache"),
        ("tab\tand\nnewline", "tab and newline"),
        ("!!!", ""),
        ("", ""),
    ],
)
def test_normalize_title(title: str, expected: str) -> None:
    assert normalize_title(title) == expected


def test_normalize_title_is_idempotent() -> None:
    once = normalize_title("  Retry on  Connection-Loss!")
    assert normalize_title(once) == once


# --- prompts -----------------------------------------------------------------------------------


def test_messages_put_the_example_in_an_earlier_turn() -> None:
    messages = extraction_messages("Pull request #7: Fix a race", max_chars=2000)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[0]["content"] == SYSTEM
    assert messages[1]["content"] == EXAMPLE_USER
    assert messages[2]["content"] == EXAMPLE_ASSISTANT
    assert messages[3]["content"] == "Pull request #7: Fix a race"
    assert EXAMPLE_ASSISTANT not in SYSTEM  # the example is not inlined in the instructions


def test_example_answer_is_valid_and_defines_example_titles() -> None:
    example = ExtractionResult.model_validate_json(EXAMPLE_ASSISTANT)
    assert {normalize_title(p.title) for p in example.patterns} == EXAMPLE_TITLES
    assert len(EXAMPLE_TITLES) == 2


def test_messages_truncate_long_content() -> None:
    content = "word " * 1000  # 5000 characters
    last = extraction_messages(content, max_chars=200)[-1]["content"]
    assert last.endswith("\n[... truncated]")
    kept = last.removesuffix("\n[... truncated]")
    assert kept == content[:200].rstrip()
    assert len(kept) <= 200


@pytest.mark.parametrize("extra", [0, -1])
def test_messages_keep_content_up_to_the_limit(extra: int) -> None:
    content = "x" * (300 + extra)
    assert extraction_messages(content, max_chars=300)[-1]["content"] == content


def test_messages_truncate_real_long_pull_request(celery_records: list[dict[str, Any]]) -> None:
    from pipeline.intake.normalize import NormalizedInteraction, parse_record

    items = [parse_record(r) for r in celery_records]
    contents = [i.content for i in items if isinstance(i, NormalizedInteraction)]
    longest = max(contents, key=len)
    limit = 500
    assert len(longest) > limit, "fixture changed: expected a PR longer than the limit"
    last = extraction_messages(longest, max_chars=limit)[-1]["content"]
    assert last.startswith(longest[:100])
    assert last.endswith("[... truncated]")
    assert len(last) <= limit + len("\n[... truncated]")


# --- schemas -----------------------------------------------------------------------------------


def test_schema_accepts_a_full_result() -> None:
    text = output(
        [pattern("A first one"), pattern("A second one"), pattern("A third one", confidence=0)],
        [relationship("A first one", "A second one")] * 3,
    )
    result = ExtractionResult.model_validate_json(text)
    assert len(result.patterns) == 3
    assert len(result.relationships) == 3


def test_schema_relationships_default_to_empty() -> None:
    result = ExtractionResult.model_validate_json(output([pattern()]))
    assert result.relationships == []


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"patterns": [pattern(f"Pattern {i}") for i in range(4)]}, ("patterns",)),
        (
            {"patterns": [pattern()], "relationships": [relationship("a", "b")] * 4},
            ("relationships",),
        ),
        ({"patterns": [pattern()], "notes": "extra"}, ("notes",)),
        ({"patterns": [pattern(rationale="extra")]}, ("patterns", 0, "rationale")),
        (
            {"patterns": [pattern()], "relationships": [relationship("a", "b", why="extra")]},
            ("relationships", 0, "why"),
        ),
        ({"patterns": [pattern(confidence=1.5)]}, ("patterns", 0, "confidence")),
        ({"patterns": [pattern(confidence=-0.1)]}, ("patterns", 0, "confidence")),
        (
            {"patterns": [pattern()], "relationships": [relationship("a", "b", strength=1.01)]},
            ("relationships", 0, "strength"),
        ),
        ({"patterns": [pattern(type="wisdom")]}, ("patterns", 0, "type")),
        (
            {"patterns": [pattern()], "relationships": [relationship("a", "b", type="likes")]},
            ("relationships", 0, "type"),
        ),
        ({"patterns": [pattern("ab")]}, ("patterns", 0, "title")),
        ({"patterns": [pattern("t" * 61)]}, ("patterns", 0, "title")),
        ({"patterns": [pattern(description="")]}, ("patterns", 0, "description")),
        ({"patterns": [pattern(description="d" * 161)]}, ("patterns", 0, "description")),
        ({"patterns": [pattern(evidence="e" * 121)]}, ("patterns", 0, "evidence")),
        (
            {"patterns": [{k: v for k, v in pattern().items() if k != "evidence"}]},
            ("patterns", 0, "evidence"),
        ),
        ({"trivial": "maybe", "patterns": []}, ("trivial",)),
    ],
    ids=[
        "four-patterns",
        "four-relationships",
        "extra-top-level",
        "extra-pattern-field",
        "extra-relationship-field",
        "confidence-1.5",
        "confidence-negative",
        "strength-over-1",
        "unknown-pattern-type",
        "unknown-relationship-type",
        "title-too-short",
        "title-too-long",
        "empty-description",
        "description-too-long",
        "evidence-too-long",
        "missing-evidence",
        "trivial-not-a-boolean",
    ],
)
def test_schema_rejects(body: dict[str, Any], loc: tuple[Any, ...]) -> None:
    with pytest.raises(ValidationError) as info:
        ExtractionResult.model_validate_json(json.dumps(body))
    assert loc in [err["loc"] for err in info.value.errors()]


def test_json_schema_is_closed_and_bounded() -> None:
    schema = extraction_json_schema()
    assert schema["additionalProperties"] is False
    for name in ("ExtractedPattern", "ExtractedRelationship"):
        assert schema["$defs"][name]["additionalProperties"] is False
    props = schema["properties"]
    assert "minItems" not in props["patterns"] and props["patterns"]["maxItems"] == 3
    # The engine is asked for every field, the verdict last (stored outputs may omit it).
    assert list(props) == schema["required"] == ["patterns", "relationships", "trivial"]
    assert props["relationships"]["maxItems"] == 3
    confidence = schema["$defs"]["ExtractedPattern"]["properties"]["confidence"]
    assert (confidence["minimum"], confidence["maximum"]) == (0, 1)


@pytest.mark.parametrize(
    "body",
    [{"patterns": []}, {}, {"trivial": True, "patterns": [], "relationships": []}],
    ids=["no-patterns", "empty-object", "marked-trivial"],
)
def test_schema_admits_a_trivial_answer(body: dict[str, Any]) -> None:
    result = ExtractionResult.model_validate_json(json.dumps(body))
    assert result.patterns == [] and result.relationships == []


@pytest.mark.parametrize(
    "body",
    [
        {"trivial": True, "patterns": [], "relationships": []},
        {"trivial": False, "patterns": [], "relationships": [relationship("a", "b")]},
    ],
    ids=["marked", "no-patterns"],
)
def test_parse_output_a_trivial_answer_has_no_patterns(body: dict[str, Any]) -> None:
    result = parse_output(json.dumps(body), "stop")
    assert result.trivial and result.patterns == [] and result.relationships == []


@pytest.mark.parametrize("flag", [False, True], ids=["unmarked", "marked-trivial-anyway"])
def test_parse_output_patterns_make_a_lesson(flag: bool) -> None:
    # Patterns are written before the verdict: they win over a contradicting flag.
    body = {"patterns": [pattern()], "relationships": [], "trivial": flag}
    result = parse_output(json.dumps(body), "stop")
    assert result.trivial is False and len(result.patterns) == 1


# --- extraction_key ----------------------------------------------------------------------------


def test_extraction_key() -> None:
    key = extraction_key("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert key == f"p{PROMPT_VERSION}:s{SCHEMA_VERSION}:HuggingFaceTB/SmolLM2-135M-Instruct"
    assert extraction_key("model-a") != extraction_key("model-b")


# --- parse_output ------------------------------------------------------------------------------


def test_parse_output_valid() -> None:
    text = output(
        [pattern("Retry broker connection"), pattern("Test dropped connection", type="testing")],
        [relationship("Test dropped connection", "Retry broker connection")],
    )
    result = parse_output(text, "stop")
    assert [p.title for p in result.patterns] == [
        "Retry broker connection",
        "Test dropped connection",
    ]
    assert result.relationships[0].source == "Test dropped connection"
    assert result.relationships[0].type == "depends_on"


def test_parse_output_accepts_whitespace_around_json() -> None:
    result = parse_output("\n  " + output([pattern()]) + "\n", "stop")
    assert len(result.patterns) == 1


@pytest.mark.parametrize("text", [output([pattern()]), '{"patterns": [{"type": "bug'])
def test_parse_output_truncated(text: str) -> None:
    """Stopping at the token limit is reported as truncation, even when the text parses."""
    with pytest.raises(ModelOutputError) as info:
        parse_output(text, "length")
    assert info.value.truncated is True
    assert isinstance(info.value, PipelineError)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "Sure! Here are the patterns:",
        '{"patterns": [',
        '```json\n{"patterns": []}\n```',
        "[]",
        "null",
    ],
)
def test_parse_output_invalid_json(text: str) -> None:
    with pytest.raises(ModelOutputError) as info:
        parse_output(text, "stop")
    assert info.value.truncated is False
    assert info.value.reason.startswith("invalid output at ")
    assert str(info.value) == info.value.reason


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"patterns": [pattern(f"Distinct pattern {i}") for i in range(4)]}, "patterns"),
        ({"patterns": [pattern(extra_field="x")]}, "patterns.0.extra_field"),
        (
            {"patterns": [pattern(), pattern("Another one", confidence=1.5)]},
            "patterns.1.confidence",
        ),
        ({"patterns": [pattern()], "relationships": [relationship("a", "b")] * 4}, "relationships"),
    ],
    ids=["four-patterns", "extra-field", "confidence-1.5", "four-relationships"],
)
def test_parse_output_schema_violations(body: dict[str, Any], where: str) -> None:
    with pytest.raises(ModelOutputError) as info:
        parse_output(json.dumps(body), "stop")
    assert info.value.truncated is False
    assert info.value.reason.startswith(f"invalid output at {where}: ")


@pytest.mark.parametrize(
    "echo", ["Reconnect with exponential backoff", "test for DROPPED broker-connection!"]
)
def test_parse_output_drops_example_echoes(echo: str) -> None:
    text = output(
        [
            pattern(echo),
            pattern("Pin the result backend"),
            pattern("Reconnect with exponential backoff"),
        ],
        [relationship(echo, "Pin the result backend")],
    )
    result = parse_output(text, "stop")
    assert [p.title for p in result.patterns] == ["Pin the result backend"]
    # Relationships are kept; the ones naming dropped patterns fail to resolve later.
    assert len(result.relationships) == 1


def test_parse_output_drops_duplicate_titles_keeping_the_first() -> None:
    text = output(
        [
            pattern("Retry on connection loss", confidence=0.9),
            pattern("retry on connection-loss!", confidence=0.2),
            pattern("Bound the retry delay"),
        ]
    )
    result = parse_output(text, "stop")
    assert [(p.title, p.confidence) for p in result.patterns] == [
        ("Retry on connection loss", 0.9),
        ("Bound the retry delay", 0.8),
    ]


def test_parse_output_only_echoes_raises() -> None:
    with pytest.raises(ModelOutputError, match="example") as info:
        parse_output(EXAMPLE_ASSISTANT, "stop")
    assert info.value.truncated is False


def test_parse_output_only_punctuation_titles_raises() -> None:
    with pytest.raises(ModelOutputError, match="empty titles"):
        parse_output(output([pattern("!!!"), pattern("- - -")]), "stop")


def test_parse_output_result_is_revalidated_model() -> None:
    result = parse_output(output([pattern("Keep me"), pattern("keep me")]), "stop")
    assert isinstance(result, ExtractionResult)
    assert ExtractionResult.model_validate_json(result.model_dump_json()) == result


# --- retry_decision ----------------------------------------------------------------------------


@pytest.mark.parametrize("truncated", [True, False])
def test_retry_first_attempt(settings: Settings, truncated: bool) -> None:
    error = ModelOutputError("output truncated at the token limit", truncated=truncated)
    decision = retry_decision(1, error, settings)
    assert decision.retry is True
    assert decision.max_tokens == settings.extract_retry_max_tokens == 1024
    assert decision.temperature == settings.extract_retry_temperature == 0.3
    assert decision.reason == error.reason


def test_retry_uses_settings(settings: Settings) -> None:
    custom = settings.model_copy(
        update={"extract_retry_max_tokens": 777, "extract_retry_temperature": 0.9}
    )
    decision = retry_decision(1, ModelOutputError("bad"), custom)
    assert (decision.max_tokens, decision.temperature) == (777, 0.9)


def test_retry_never_shrinks_the_token_limit(settings: Settings) -> None:
    custom = settings.model_copy(
        update={"extract_max_tokens": 2048, "extract_retry_max_tokens": 1024}
    )
    assert retry_decision(1, ModelOutputError("bad"), custom).max_tokens == 2048


@pytest.mark.parametrize("attempt", [MAX_ATTEMPTS, MAX_ATTEMPTS + 1])
def test_no_retry_after_max_attempts(settings: Settings, attempt: int) -> None:
    assert MAX_ATTEMPTS == 2
    error = ModelOutputError("invalid output at patterns: too many")
    decision = retry_decision(attempt, error, settings)
    assert decision.retry is False
    assert error.reason in decision.reason
    assert f"{attempt} attempts" in decision.reason


# --- resolve_relationships ---------------------------------------------------------------------

RETRY = uuid.UUID(int=1)
TEST = uuid.UUID(int=2)
OLD = uuid.UUID(int=3)
OLD_RETRY = uuid.UUID(int=4)
LOCAL = {"retry with backoff": RETRY, "test dropped connection": TEST}
PROJECT = {"pin the result backend": OLD, "retry with backoff": OLD_RETRY}
CUTOFF = 0.85


def rel(source: str, target: str, type_: str = "depends_on") -> ExtractedRelationship:
    return ExtractedRelationship.model_validate(relationship(source, target, type=type_))


def resolve(
    *rels: ExtractedRelationship, cutoff: float = CUTOFF
) -> tuple[list[ResolvedRelationship], list[tuple[ExtractedRelationship, str]]]:
    return resolve_relationships(list(rels), LOCAL, PROJECT, cutoff)


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("Test dropped connection", "Retry with backoff", (TEST, RETRY)),
        ("TEST: dropped-connection!", "  retry   WITH backoff ", (TEST, RETRY)),  # normalised
        ("Retry with backoff", "Pin the result backend", (RETRY, OLD)),  # project-level
        ("Test dropped connection", "Retry with backof", (TEST, RETRY)),  # fuzzy, typo
        ("Test dropped connections", "Retry with backoff", (TEST, RETRY)),  # fuzzy, plural
    ],
    ids=["exact", "normalised", "project", "fuzzy-typo", "fuzzy-plural"],
)
def test_resolve_matches(source: str, target: str, expected: tuple[uuid.UUID, uuid.UUID]) -> None:
    relation = rel(source, target)
    resolved, unresolved = resolve(relation)
    assert unresolved == []
    assert resolved == [ResolvedRelationship(*expected, relation)]


def test_resolve_prefers_this_output_over_the_project() -> None:
    resolved, _ = resolve(rel("Retry with backoff", "Test dropped connection"))
    assert resolved[0].source_id == RETRY  # not OLD_RETRY


def test_resolve_fuzzy_only_against_this_output() -> None:
    """A near miss of a project title is not matched: fuzzy matching is local only."""
    resolved, unresolved = resolve(rel("Retry with backoff", "Pin the result backends"))
    assert resolved == []
    assert unresolved[0][1] == "no pattern titled 'Pin the result backends'"


def test_resolve_fuzzy_respects_cutoff() -> None:
    relation = rel("Test dropped connection", "Retry with backof")
    resolved, unresolved = resolve(relation, cutoff=0.99)
    assert resolved == []
    assert unresolved == [(relation, "no pattern titled 'Retry with backof'")]


@pytest.mark.parametrize(
    ("source", "target", "missing"),
    [
        ("Use a circuit breaker", "Retry with backoff", "Use a circuit breaker"),
        ("Retry with backoff", "Use a circuit breaker", "Use a circuit breaker"),
        ("Unknown one", "Unknown two", "Unknown one"),
    ],
)
def test_resolve_unknown_titles(source: str, target: str, missing: str) -> None:
    relation = rel(source, target)
    resolved, unresolved = resolve(relation)
    assert resolved == []
    assert unresolved == [(relation, f"no pattern titled {missing!r}")]


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("Retry with backoff", "Retry with backoff"),
        ("Retry with backoff", "retry with backoff."),
        ("Retry with backoff", "Retry with backof"),  # fuzzy match lands on the same pattern
    ],
)
def test_resolve_drops_self_loops(source: str, target: str) -> None:
    relation = rel(source, target)
    resolved, unresolved = resolve(relation)
    assert resolved == []
    assert unresolved == [(relation, "source and target are the same pattern")]


def test_resolve_drops_duplicates_but_not_other_types_or_directions() -> None:
    first = rel("Test dropped connection", "Retry with backoff")
    same = rel("test dropped connection!", "RETRY WITH BACKOFF")
    other_type = rel("Test dropped connection", "Retry with backoff", "related_to")
    reversed_ = rel("Retry with backoff", "Test dropped connection")
    resolved, unresolved = resolve(first, same, other_type, reversed_)
    assert [r.relationship for r in resolved] == [first, other_type, reversed_]
    assert unresolved == [(same, "duplicate")]


def test_resolve_keeps_input_order_and_partitions_everything() -> None:
    rels = [
        rel("Test dropped connection", "Retry with backoff"),
        rel("Nope", "Retry with backoff"),
        rel("Retry with backoff", "Pin the result backend"),
        rel("Retry with backoff", "Retry with backoff"),
    ]
    resolved, unresolved = resolve(*rels)
    assert [r.relationship for r in resolved] == [rels[0], rels[2]]
    assert [r for r, _ in unresolved] == [rels[1], rels[3]]


def test_resolve_nothing() -> None:
    assert resolve_relationships([], LOCAL, PROJECT, CUTOFF) == ([], [])
    relation = rel("Retry with backoff", "Test dropped connection")
    resolved, unresolved = resolve_relationships([relation], {}, {}, CUTOFF)
    assert resolved == []
    assert unresolved == [(relation, "no pattern titled 'Retry with backoff'")]


def test_parse_then_resolve_an_echo_leaves_the_relationship_unresolved() -> None:
    """End to end on plain values: a relationship naming a dropped echo does not resolve."""
    text = output(
        [pattern("Reconnect with exponential backoff"), pattern("Pin the result backend")],
        [relationship("Pin the result backend", "Reconnect with exponential backoff")],
    )
    result = parse_output(text, "stop")
    local = {normalize_title(p.title): uuid.uuid4() for p in result.patterns}
    resolved, unresolved = resolve_relationships(result.relationships, local, {}, CUTOFF)
    assert resolved == []
    assert unresolved[0][1] == "no pattern titled 'Reconnect with exponential backoff'"
