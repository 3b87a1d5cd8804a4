"""A stand-in for the model when what is under test is what happens to its output (the store,
merges, isolation): it answers each request with the output scripted for the interaction whose
text the request carries, as a :class:`pipeline.llm.base.StructuredLLM` would."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.llm.base import Generation, GenerationRequest
from pipeline.types import Provider


def pattern(
    title: str, type_: str = "error_handling", description: str = "", evidence: str = ""
) -> dict[str, Any]:
    """One extracted pattern of the extraction schema."""
    return {
        "type": type_,
        "title": title,
        "description": description or f"{title}, as the change shows.",
        "confidence": 0.8,
        "evidence": evidence,
    }


def edge(
    source: str, target: str, type_: str = "depends_on", strength: float = 0.5
) -> dict[str, Any]:
    """One extracted relationship between two titles."""
    return {"source": source, "target": target, "type": type_, "strength": strength,
            "confidence": 0.6}  # fmt: skip


class ReplayLLM:
    """Answers a request with ``outputs[marker]`` for the first marker found in its last user
    message (an extraction result as JSON), or with invalid output when none matches."""

    provider = Provider.LOCAL
    model_name = "replay"

    def __init__(self, outputs: Mapping[str, Mapping[str, Any]]) -> None:
        self.outputs = dict(outputs)
        self.requests: list[GenerationRequest] = []

    def generate(self, requests: Sequence[GenerationRequest]) -> list[Generation]:
        """One scripted output per request, same order."""
        out = []
        for request in requests:
            self.requests.append(request)
            text = request.messages[-1]["content"]
            body = next((v for k, v in self.outputs.items() if k in text), None)
            answer = json.dumps(body) if body is not None else "not json"
            out.append(Generation(answer, "stop", tokens_in=len(text) // 4, tokens_out=20))
        return out
