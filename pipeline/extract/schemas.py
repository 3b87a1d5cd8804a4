"""Structured-output models: what a model must return for one interaction.

The JSON schema of :class:`ExtractionResult` is handed to the engine (vLLM structured outputs,
Claude's JSON output), so generation can only produce text of this shape; the text is then
validated with the same model. Length limits keep a small model from running away and bound the
output to about 450 tokens. Version 2 lets the model say "nothing here": ``trivial`` and zero
patterns (version 1 forced 1-3 patterns even for a version bump).
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import ModelOutputError

M = TypeVar("M", bound=BaseModel)

#: Bump when a field or limit changes: part of the extraction idempotency key.
SCHEMA_VERSION = "2"

PatternType = Literal[
    "bug_fix",
    "feature",
    "refactoring",
    "dependency_update",
    "testing",
    "documentation",
    "configuration",
    "performance",
    "error_handling",
    "security",
    "api_design",
    "best_practice",
    "anti_pattern",
]

RelationshipType = Literal[
    "depends_on",
    "related_to",
    "extends",
    "implements",
    "fixes",
    "conflicts_with",
    "supersedes",
]


class ExtractedPattern(BaseModel):
    """One pattern: a reusable practice, fix or decision visible in the interaction."""

    model_config = ConfigDict(extra="forbid")
    type: PatternType
    title: str = Field(min_length=3, max_length=60)
    description: str = Field(min_length=1, max_length=160)
    confidence: float = Field(ge=0, le=1)
    evidence: str = Field(max_length=120, description="Words from the interaction backing it.")


class ExtractedRelationship(BaseModel):
    """An edge between two patterns, named by their titles."""

    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=1, max_length=60)
    target: str = Field(min_length=1, max_length=60)
    type: RelationshipType
    strength: float = Field(ge=0, le=1)
    confidence: float = Field(ge=0, le=1)


class ExtractionResult(BaseModel):
    """The whole answer for one interaction: ``trivial`` (no reusable lesson: a version bump,
    a dependency pin, release prep, a typo fix) with no patterns, or 1-3 patterns and up to 3
    relationships. An answer with no patterns counts as trivial and one with patterns as a
    lesson, whatever its flag says (:func:`pipeline.extract.batch.parse_output`)."""

    model_config = ConfigDict(extra="forbid")
    patterns: list[ExtractedPattern] = Field(default_factory=list, max_length=3)
    relationships: list[ExtractedRelationship] = Field(default_factory=list, max_length=3)
    # Last: measured on the shared gold, the 135M model wrote worse patterns when it had to
    # give its verdict first (docs/QUALITY.md).
    trivial: bool = Field(
        default=False,
        description="True when the text carries no reusable lesson; then patterns is empty.",
    )


def extraction_json_schema() -> dict[str, Any]:
    """The JSON schema handed to the engine: pydantic's, with every object closed and every
    top-level field required, so constrained decoding always writes ``trivial`` (after the
    patterns) while stored outputs without it still validate."""
    schema = ExtractionResult.model_json_schema()
    schema["required"] = list(schema["properties"])
    return schema


def validate_output(model: type[M], text: str, finish_reason: str) -> M:
    """Validate one structured output (a model's JSON text) against ``model``.

    Raises:
        ModelOutputError: generation stopped at the token limit (``finish_reason == "length"``,
            ``truncated=True``), or the text is not valid JSON of the schema (the reason names
            the first failing field).
    """
    if finish_reason == "length":
        raise ModelOutputError("output truncated at the token limit", truncated=True)
    try:
        return model.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "output"
        raise ModelOutputError(f"invalid output at {where}: {first.get('msg')}") from exc
