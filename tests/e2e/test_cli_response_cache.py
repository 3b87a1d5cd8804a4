"""The response cache issue's done-when, through the CLI: ``patterns run`` over 20 deliveries,
then the same 20 deliveries again under new delivery ids (same content). The second run makes no
model call: its ``llm_calls`` are all zero and its ``cache_hits`` equal the first run's accepted
outputs (extractions, and strategic analyses where the pull requests were complex enough).

The local engine is the OpenAI-compatible one (``PATTERNS_LOCAL_ENGINE=openai``) against a
loopback server speaking the chat-completions wire format, which counts every request it gets;
embeddings are the real MiniLM, the database the embedded Postgres.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.chat_server import Answer, chat_server

pytestmark = pytest.mark.e2e

PATTERNS = Path(sys.executable).with_name("patterns")
DELIVERIES = 20
ANALYSIS_MARKER = "Patterns extracted from it:\n"


def _answer(prompt: str, _seen: int) -> Answer:
    """A valid structured answer for any prompt: a strategic analysis naming the first listed
    pattern, or one pattern titled after the pull request's first line."""
    if ANALYSIS_MARKER in prompt:
        titles = [line[2:] for line in prompt.split(ANALYSIS_MARKER, 1)[1].splitlines()
                  if line.startswith("- ")]  # fmt: skip
        body: dict[str, object] = {"recommendations": [{
            "title": "Review the change", "body": "Check the change against the patterns.",
            "priority": "low", "confidence": 0.5, "patterns": titles[:1],
        }]}  # fmt: skip
    else:
        first = prompt.strip().splitlines()[0].split(":", 1)[-1].strip()
        body = {"patterns": [{
            "type": "feature", "title": f"Change: {first}"[:60],
            "description": "What the pull request changes.", "confidence": 0.7, "evidence": "",
        }], "relationships": []}  # fmt: skip
    return 200, json.dumps(body), "stop"


def _deliveries(src: Path, dest: Path, n: int, suffix: str = "") -> Path:
    """The first ``n`` lines of the corpus, each delivery id with ``suffix`` appended."""
    with gzip.open(src, "rt") as fh:
        records = [json.loads(next(fh)) for _ in range(n)]
    for record in records:
        record["delivery"] = f"{record['delivery']}{suffix}"
    dest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return dest


def _run(args: list[str], env: dict[str, str], timeout: float = 900) -> dict[str, object]:
    proc = subprocess.run(
        [str(PATTERNS), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_same_deliveries_under_new_ids_are_served_from_the_cache(
    tmp_path: Path, data_dir: Path, shared_corpus: Path
) -> None:
    first_file = _deliveries(shared_corpus, tmp_path / "first.jsonl", DELIVERIES)
    again_file = _deliveries(shared_corpus, tmp_path / "again.jsonl", DELIVERIES, "-again")
    with chat_server(_answer) as (url, server):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PATTERNS_")}
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        env.update(
            HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PATTERNS_DATA_DIR=str(data_dir),
            PATTERNS_LOCAL_ENGINE="openai", PATTERNS_OPENAI_BASE_URL=url,
            PATTERNS_OPENAI_MODEL="scripted",
        )  # fmt: skip
        first = _run(["run", str(first_file), "--json"], env)
        requests_first = len(server.bodies)
        again = _run(["run", str(again_file), "--json"], env)
        requests_again = len(server.bodies) - requests_first
        stats = _run(["stats", "--json"], env, timeout=120)

    assert first["new_interactions"] == DELIVERIES and again["new_interactions"] == DELIVERIES
    assert first["failed"] == 0 and first["cache_hits"] == 0
    analyses = first["analyses"].get("done", 0)  # type: ignore[attr-defined]
    accepted = first["extracted"] + analyses  # type: ignore[operator]
    assert first["llm_calls"] == {"local": requests_first, "claude": 0}
    assert requests_first == accepted  # every answer valid: one request each

    assert requests_again == 0
    assert again["llm_calls"] == {"local": 0, "claude": 0}
    assert again["cache_hits"] == accepted
    assert again["extracted"] == first["extracted"] and again["failed"] == 0
    assert again["analyses"] == first["analyses"]
    assert again["tokens_out"] == 0 and again["cost_usd"] == 0.0
    for key in ("patterns", "embedded", "relationships"):
        assert again[key] == first[key], key

    assert stats["cache_hits"] == accepted
    assert stats["llm_calls_by_provider"] == {"local": accepted}
    assert stats["cache_hit_rate"] == pytest.approx(0.5)
    assert stats["llm_response_cache"] == accepted
