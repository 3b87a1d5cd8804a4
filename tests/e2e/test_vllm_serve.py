"""``PATTERNS_LOCAL_ENGINE=openai`` against a real vLLM OpenAI-compatible server of the packaged
model on loopback: structured output through ``response_format`` json_schema, as README's "Bring
your own model server" serves it (:func:`support.model_server.start_vllm_server`)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from support.model_server import start_vllm_server
from support.processes import stop_group

pytestmark = pytest.mark.e2e

PATTERNS = Path(sys.executable).with_name("patterns")
DELIVERIES = 6


def test_run_extracts_through_a_real_vllm_server(
    tmp_path: Path, data_dir: Path, shared_corpus: Path, extract_model_path: str,
    die_with_parent: Callable[[], None],
) -> None:  # fmt: skip
    with gzip.open(shared_corpus, "rt") as fh:
        lines = [next(fh) for _ in range(DELIVERIES)]
    deliveries = tmp_path / "deliveries.jsonl"
    deliveries.write_text("".join(lines))
    log = tmp_path / "vllm-serve.log"
    server, base_url = start_vllm_server(extract_model_path, log, die_with_parent)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PATTERNS_")}
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        env.update(
            HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PATTERNS_DATA_DIR=str(data_dir),
            PATTERNS_LOCAL_ENGINE="openai", PATTERNS_OPENAI_MODEL="smollm2",
            PATTERNS_OPENAI_BASE_URL=base_url,
        )  # fmt: skip
        proc = subprocess.run(
            [str(PATTERNS), "run", str(deliveries), "--json"], env=env, capture_output=True,
            text=True, timeout=900,
        )  # fmt: skip
    finally:
        stop_group(server)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["interactions"] == DELIVERIES
    assert out["extracted"] >= DELIVERIES - 1, out["failure_reasons"]
    assert out["llm_calls"]["local"] >= out["extracted"]  # every answer came from the server
    assert out["patterns"] > 0 and out["embedded"] == out["patterns"]
    served = log.read_text(errors="replace")
    assert 'POST /v1/chat/completions HTTP/1.1" 200' in served
