"""The error-fix prompt: the structured output asked for (:class:`FixSuggestion`), the messages
with accepted fixes as earlier turns (:func:`fix_messages`), and the output check
(:func:`parse_fix`)."""

from __future__ import annotations

import json
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from pipeline.db.models import CodeAnalysis, TypeScriptError
from pipeline.errors import ModelOutputError
from pipeline.extract.schemas import validate_output


class FixSuggestion(BaseModel):
    """The model's answer for one error (structured output)."""

    model_config = ConfigDict(extra="forbid")
    fixed_code: str = Field(min_length=1, max_length=600, description="The snippet, corrected.")
    explanation: str = Field(min_length=1, max_length=240)
    confidence: float = Field(ge=0, le=1)


SYSTEM = (
    "You fix TypeScript compiler errors. Given the error and the code, reply with JSON only: "
    "fixed_code (the corrected code), explanation (one sentence) and confidence (0 to 1)."
)


def fix_messages(error: TypeScriptError, examples: Sequence[CodeAnalysis]) -> list[dict[str, str]]:
    """Chat messages for one error; each accepted example becomes an earlier user/assistant turn."""

    def ask(code: str, message: str, snippet: str | None) -> str:
        return f"error {code}: {message}\n\nCode:\n{snippet or '(no code given)'}"

    messages = [{"role": "system", "content": SYSTEM}]
    for ex in examples:
        messages.append(
            {"role": "user", "content": ask(ex.error_code, ex.error_message, ex.code_snippet)}
        )
        answer = {
            "fixed_code": ex.fixed_code,
            "explanation": ex.explanation or "",
            "confidence": ex.confidence or 0.8,
        }
        messages.append({"role": "assistant", "content": json.dumps(answer)})
    messages.append(
        {"role": "user", "content": ask(error.error_code, error.error_message, error.code_snippet)}
    )
    return messages


def parse_fix(text_out: str, finish_reason: str) -> FixSuggestion:
    """Validate a fix.

    Raises:
        ModelOutputError: truncated, invalid, or blank ``fixed_code``.
    """
    fix = validate_output(FixSuggestion, text_out, finish_reason)
    if not fix.fixed_code.strip():
        raise ModelOutputError("empty fixed_code")
    return fix
