"""The results file of ``make bench``: each bench's JSON flattened to one object of plain numbers
(:func:`flatten`), the goals (:data:`GOALS`) and the printed table (:func:`render_table`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

#: Key → (comparison, threshold): the goals of the performance issue.
GOALS: dict[str, tuple[str, float]] = {
    "extract_vs_raw": (">=", 0.9),
    "embed_vs_raw": (">=", 0.9),
    "write_vs_copy": (">=", 0.5),
    "queue_overhead_ms": ("<", 1.0),
    "recall_at_10": (">=", 0.95),
}

#: Rows of the table: (key, what it is).
ROWS: tuple[tuple[str, str], ...] = (
    ("extract_vs_raw", "extraction tokens/s, worker path / one vLLM chat()"),
    ("extract_raw_tokens_per_s", "raw vLLM output tokens/s (batch of 32)"),
    ("extract_batch1_tokens_per_s", "raw vLLM output tokens/s, one prompt per call"),
    ("prefix_cache_hit_rate", "prompt tokens served from vLLM's prefix cache"),
    ("embed_vs_raw", "embed task texts/s / SentenceTransformer.encode"),
    ("embed_texts_per_s", "embed task texts/s"),
    ("embed_onnx_speedup", "ONNX Runtime fp32 / torch texts/s"),
    ("embed_onnx_cosine_min", "ONNX Runtime fp32: min cosine to torch"),
    ("embed_onnx_int8_speedup", "ONNX Runtime int8 / torch texts/s"),
    ("embed_onnx_int8_cosine_min", "ONNX Runtime int8: min cosine to torch"),
    ("embed_torch_int8_speedup", "torch dynamic int8 / torch texts/s"),
    ("embed_torch_int8_cosine_min", "torch dynamic int8: min cosine to torch"),
    ("write_vs_copy", "pattern writer rows/s / COPY rows/s (HNSW present)"),
    ("queue_overhead_ms", "queue path per item, batched (ms)"),
    ("queue_overhead_ms_unbatched", "queue path per item, one per task (ms)"),
    ("webhook_rps", "webhook deliveries/s"),
    ("webhook_p99_ms", "webhook p99 latency (ms)"),
    ("webhook_vs_healthz", "webhook req/s / GET /healthz req/s"),
    ("webhook_vs_file", "webhook traffic / file ingest, interactions/s"),
    ("recall_at_10", "HNSW recall@10 vs exact scan (shipped settings)"),
    ("search_qps", "search() queries/s (sources and usage included)"),
    ("search_sql_qps", "search statement queries/s"),
    ("exact_scan_qps", "exact scan queries/s"),
    ("halfvec_recall_at_10", "halfvec index recall@10 (same ef_search)"),
    ("scaling_cost_growth", "store cost/interaction, largest / smallest store"),
    ("scaling_ms_per_interaction_min_store", "store cost/interaction, smallest store (ms)"),
    ("scaling_ms_per_interaction_max_store", "store cost/interaction, largest store (ms)"),
    ("scaling_interactions_per_s_max_store", "interactions/s, model + store, largest store"),
    ("bench_wall_s", "make bench wall time (s)"),
)


def _get(d: Mapping[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping) or key not in d:
            return None
        d = d[key]
    return d


def _extract(e: Mapping[str, Any]) -> dict[str, Any]:
    sweep = {p["batch_size"]: p["tokens_per_s"] for p in e.get("batch_sizes", [])}
    return {
        "extract_vs_raw": e.get("extract_vs_raw"),
        "extract_vs_raw_interactions": e.get("extract_vs_raw_interactions"),
        "extract_raw_tokens_per_s": _get(e, "raw", "tokens_per_s"),
        "extract_pipeline_tokens_per_s": _get(e, "pipeline", "tokens_per_s"),
        "extract_pipeline_interactions_per_s": _get(e, "pipeline", "interactions_per_s"),
        "extract_batch1_tokens_per_s": sweep.get(1),
        "prefix_cache_hit_rate": _get(e, "prefix_cache", "hit_rate"),
    }


def _embed(e: Mapping[str, Any]) -> dict[str, Any]:
    out = {
        "embed_vs_raw": e.get("embed_vs_raw"),
        "embed_texts_per_s": _get(e, "task", "texts_per_s"),
        "embed_raw_texts_per_s": _get(e, "raw", "texts_per_s"),
    }
    for name, b in (e.get("backends") or {}).items():
        out[f"embed_{name}_speedup"] = b.get("speedup_vs_torch")
        out[f"embed_{name}_cosine_min"] = b.get("cosine_min")
    return out


def _search(s: Mapping[str, Any]) -> dict[str, Any]:
    half = next((ix for ix in s.get("indexes", []) if ix["halfvec"]), None)
    full = next((ix for ix in reversed(s.get("indexes", [])) if not ix["halfvec"]), None)
    ef = _get(s, "shipped", "ef_search")
    same = lambda ix: next((p for p in ix["ef_search"] if p["ef_search"] == ef), {})  # noqa: E731
    return {
        "recall_at_10": s.get("recall_at_10"),
        "search_qps": s.get("search_qps"),
        "search_sql_qps": s.get("search_sql_qps"),
        "exact_scan_qps": s.get("exact_scan_qps"),
        "search_vectors": s.get("vectors"),
        "hnsw_m": _get(s, "shipped", "m"),
        "hnsw_ef_construction": _get(s, "shipped", "ef_construction"),
        "hnsw_ef_search": ef,
        "vector_index_mb": full and full["index_mb"],
        "halfvec_index_mb": half and half["index_mb"],
        "halfvec_recall_at_10": half and same(half).get("recall_at_10"),
        "halfvec_sql_qps": half and same(half).get("qps"),
    }


def _scaling(s: Mapping[str, Any], llm_s: float | None) -> dict[str, Any]:
    points = s.get("points") or []
    out: dict[str, Any] = {"scaling_cost_growth": s.get("scaling_cost_growth")}
    for p in points:
        out[f"scaling_ms_per_interaction_{p['store_patterns']}"] = p["total_ms_per_interaction"]
        if llm_s:
            out[f"scaling_interactions_per_s_{p['store_patterns']}"] = round(
                1 / (llm_s + p["total_ms_per_interaction"] / 1000), 4
            )
    if points:
        out["scaling_ms_per_interaction_min_store"] = points[0]["total_ms_per_interaction"]
        out["scaling_ms_per_interaction_max_store"] = points[-1]["total_ms_per_interaction"]
        if llm_s:
            out["scaling_interactions_per_s_max_store"] = out[
                f"scaling_interactions_per_s_{points[-1]['store_patterns']}"
            ]
    for run in s.get("pipeline_runs") or []:
        out[f"scaling_run_{run['deliveries']}_interactions_per_s"] = run["interactions_per_s"]
        out[f"scaling_run_{run['deliveries']}_tokens_out_per_s"] = run["tokens_out_per_s"]
    return out


def flatten(details: Mapping[str, Any]) -> dict[str, float]:
    """One flat object of plain numbers from the benches' outputs (absent ones left out)."""
    flat: dict[str, Any] = {}
    if "extract" in details:
        flat.update(_extract(details["extract"]))
    if "embed" in details:
        flat.update(_embed(details["embed"]))
    if "write" in details:
        flat["write_vs_copy"] = details["write"].get("write_vs_copy")
        flat["write_rows_per_s"] = _get(details["write"], "writer", "rows_per_s")
        flat["copy_rows_per_s"] = _get(details["write"], "copy", "rows_per_s")
    if "queue" in details:
        for key in ("queue_overhead_ms", "queue_overhead_ms_unbatched"):
            flat[key] = details["queue"].get(key)
    if "webhook" in details:
        flat["webhook_rps"] = _get(details["webhook"], "webhooks", "requests_per_s")
        flat["webhook_p99_ms"] = _get(details["webhook"], "webhooks", "p99_ms")
        flat["webhook_vs_healthz"] = details["webhook"].get("ratio_vs_healthz")
    if "webhook_vs_file" in details:
        flat["webhook_vs_file"] = details["webhook_vs_file"].get("ratio")
    if "search" in details:
        flat.update(_search(details["search"]))
    if "scaling" in details:
        llm = _get(details, "extract", "pipeline", "interactions_per_s")
        flat.update(_scaling(details["scaling"], 1 / llm if llm else None))
    return {k: float(v) for k, v in flat.items() if isinstance(v, int | float)}


def _met(key: str, value: float) -> str:
    if key not in GOALS:
        return ""
    op, threshold = GOALS[key]
    check: Callable[[float, float], bool] = (
        (lambda a, b: a >= b) if op == ">=" else (lambda a, b: a < b)
    )
    return f"{op} {threshold:g}: {'met' if check(value, threshold) else 'NOT MET'}"


def render_table(flat: Mapping[str, float], *, full: bool, failed: list[str]) -> str:
    """The table ``make bench`` prints: figure, value, goal."""
    lines = [
        f"make bench ({'full' if full else 'reduced'} sizes)",
        f"{'figure':<38} {'value':>11}  {'goal':<18} what",
        "-" * 110,
    ]
    for key, what in ROWS:
        if key in flat:
            lines.append(f"{key:<38} {flat[key]:>11.4g}  {_met(key, flat[key]):<18} {what}")
    lines.extend(f"{name:<38} {'FAILED':>11}" for name in failed)
    return "\n".join(lines)
