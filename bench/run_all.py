"""``make bench``: every benchmark, one after another, each in a process of its own; writes
``bench/results.json`` (one flat JSON object of plain numbers), ``bench/results-details.json``
(each bench's full output), the plots under ``docs/`` and prints a table with the goals.

Sizes are reduced by default so that the whole run fits 20 minutes on a 2-core machine (the
table says which); ``BENCH_FULL=1`` (or ``--full``) runs the full sizes: 160 interactions of
extraction, 2,400 webhooks, 48 deliveries a side, the HNSW parameter sweep, and the scaling run's
``patterns run`` over 100/500/1,900 deliveries (hours here). A bench that fails is reported in
the table and leaves its keys out; the run then exits 1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from results import GOALS, flatten, render_table

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
DETAILS = HERE / "results-details.json"
DOCS = HERE.parent / "docs"

#: (name, script, arguments at reduced size, arguments at full size), in running order: the
#: embed bench first saves the real embeddings the store benches shape their vectors on.
BENCHES: tuple[tuple[str, str, list[str], list[str]], ...] = (
    ("queue", "queue_overhead.py", ["2000"], ["5000"]),
    ("embed", "embed_throughput.py", ["128"], ["512"]),
    ("write", "write_vs_copy.py", ["250"], ["500"]),
    ("search", "search_recall.py", ["100000"], ["100000", "--sweep"]),
    ("scaling", "store_scaling.py", ["40"], ["40", "--full"]),
    ("extract", "extract_throughput.py", ["96"], ["160"]),  # a queue of 3 (5) batches
    ("webhook", "webhook_load.py", ["600", "32"], ["2400", "32"]),
    ("webhook_vs_file", "webhook_vs_file.py", ["8"], ["48"]),
)


def _run(name: str, script: str, args: list[str]) -> tuple[dict[str, Any] | None, float, str]:
    """Run one bench; returns its JSON (None on failure), its wall seconds and its log tail."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        target = Path(out.name)
    env = {
        **os.environ,
        "BENCH_JSON": str(target),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "PYTHONPATH": f"{HERE}:{HERE.parent}",
    }
    print(f"[bench] {name}: {script} {' '.join(args)}", flush=True)
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(HERE / script), *args],
        cwd=HERE,
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    tail = (proc.stdout + proc.stderr)[-3000:]
    data = json.loads(target.read_text()) if target.stat().st_size else None
    target.unlink(missing_ok=True)
    if proc.returncode != 0:
        print(f"[bench] {name} failed (exit {proc.returncode}):\n{tail}", flush=True)
    print(f"[bench] {name}: {seconds:.0f} s", flush=True)
    return data, seconds, tail


def main() -> None:
    """Run every bench, write the results and plots, print the table."""
    full = "--full" in sys.argv or os.environ.get("BENCH_FULL") == "1"
    only = [a for a in sys.argv[1:] if not a.startswith("--")]
    started = time.perf_counter()
    details: dict[str, Any] = {}
    walls: dict[str, float] = {}
    failed: list[str] = []
    for name, script, reduced, full_args in BENCHES:
        if only and name not in only:
            continue
        data, walls[name], _ = _run(name, script, full_args if full else reduced)
        if data is None:
            failed.append(name)
        else:
            details[name] = data
    total = time.perf_counter() - started
    if only and DETAILS.is_file():  # a partial run updates the previous run's figures
        before = json.loads(DETAILS.read_text())
        walls = {**before.pop("wall_s", {}), **walls}
        details = {**{k: v for k, v in before.items() if k != "full"}, **details}
    flat = flatten(details)
    flat["bench_full_sizes"] = 1 if full else 0
    flat.update({f"bench_{k}_wall_s": round(v, 1) for k, v in walls.items()})
    if only and RESULTS.is_file():
        flat["bench_wall_s"] = json.loads(RESULTS.read_text()).get("bench_wall_s", 0.0)
        flat["bench_partial_wall_s"] = round(total, 1)
    else:
        flat["bench_wall_s"] = round(total, 1)
    RESULTS.write_text(json.dumps(flat, indent=2, sort_keys=True) + "\n")
    DETAILS.write_text(json.dumps({"full": full, "wall_s": walls, **details}, indent=2) + "\n")
    try:
        from plots import plot_all

        plot_all(details, DOCS)
    except Exception as exc:  # the figures are written above whatever happens to the plots
        print(f"[bench] plots failed: {exc!r}", flush=True)
    print(render_table(flat, full=full, failed=failed))
    print(f"[bench] results: {RESULTS} (goals: {', '.join(GOALS)})")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
