"""The shape of ``bench/results.json``: the benches' outputs flattened to one object of plain
numbers with the issue's keys, and the goals judged in the printed table (no timing here)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).resolve().parents[2] / "bench"


def _results() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_results", BENCH / "results.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_results"] = module
    spec.loader.exec_module(module)
    return module


DETAILS = {
    "extract": {
        "extract_vs_raw": 0.95, "extract_vs_raw_interactions": 0.94,
        "raw": {"tokens_per_s": 90.0}, "pipeline": {"tokens_per_s": 85.5,
                                                    "interactions_per_s": 0.5},
        "prefix_cache": {"hit_rate": 0.48},
        "batch_sizes": [{"batch_size": 1, "tokens_per_s": 7.0}],
    },
    "embed": {"embed_vs_raw": 0.97, "task": {"texts_per_s": 12.0}, "raw": {"texts_per_s": 12.4},
              "backends": {"onnx": {"speedup_vs_torch": 1.4, "cosine_min": 0.99999},
                           "onnx_int8": {"error": "not installed"}}},
    "write": {"write_vs_copy": 0.3, "writer": {"rows_per_s": 50}, "copy": {"rows_per_s": 160}},
    "queue": {"queue_overhead_ms": 0.12, "queue_overhead_ms_unbatched": 4.2},
    "webhook": {"webhooks": {"requests_per_s": 300.0, "p99_ms": 250.0}, "ratio_vs_healthz": 0.4},
    "webhook_vs_file": {"ratio": 0.85},
    "search": {
        "recall_at_10": 0.97, "search_qps": 40.0, "search_sql_qps": 150.0, "exact_scan_qps": 9.0,
        "vectors": 100000, "shipped": {"m": 16, "ef_construction": 64, "ef_search": 100},
        "indexes": [
            {"m": 16, "ef_construction": 64, "halfvec": True, "index_mb": 100.0,
             "ef_search": [{"ef_search": 100, "recall_at_10": 0.96, "qps": 160.0}]},
            {"m": 16, "ef_construction": 64, "halfvec": False, "index_mb": 195.0,
             "ef_search": [{"ef_search": 100, "recall_at_10": 0.97, "qps": 150.0}]},
        ],
    },
    "scaling": {"scaling_cost_growth": 1.1, "points": [
        {"store_patterns": 1000, "total_ms_per_interaction": 100.0},
        {"store_patterns": 20000, "total_ms_per_interaction": 110.0},
    ]},
}  # fmt: skip


def test_every_key_of_the_issue_is_a_plain_number() -> None:
    flat = _results().flatten(DETAILS)
    for key in ("extract_vs_raw", "embed_vs_raw", "write_vs_copy", "queue_overhead_ms",
                "queue_overhead_ms_unbatched", "webhook_rps", "webhook_p99_ms",
                "webhook_vs_file", "search_qps", "recall_at_10", "scaling_cost_growth",
                "prefix_cache_hit_rate", "halfvec_recall_at_10"):  # fmt: skip
        assert type(flat[key]) is float, key
    assert all(type(v) is float for v in flat.values())
    assert "embed_onnx_int8_speedup" not in flat  # a backend that failed leaves no figure
    assert flat["scaling_interactions_per_s_20000"] == round(1 / (2.0 + 0.11), 4)


def test_the_table_judges_each_goal() -> None:
    results = _results()
    flat = results.flatten(DETAILS)
    table = results.render_table(flat, full=False, failed=["webhook_vs_file"])
    lines = {line.split()[0]: line for line in table.splitlines()[3:]}
    assert ">= 0.9: met" in lines["extract_vs_raw"]
    assert ">= 0.5: NOT MET" in lines["write_vs_copy"]
    assert "< 1: met" in lines["queue_overhead_ms"]
    assert "FAILED" in lines["webhook_vs_file"]
    assert set(results.GOALS) <= set(flat)
