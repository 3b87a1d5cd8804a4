"""The plots of docs/PERFORMANCE.md, drawn from the benches' outputs by ``bench/run_all.py``:
extraction throughput against batch size, the store's cost per interaction against its size,
and search recall against queries/s per ``hnsw.ef_search``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _batch_sizes(extract: Mapping[str, Any], out: Path, plt: Any) -> None:
    points = sorted(extract["batch_sizes"], key=lambda p: p["batch_size"])
    raw = extract["raw"]
    if all(p["batch_size"] != extract["batch_size"] for p in points):  # raw: calls of B
        points.append({"batch_size": extract["batch_size"], "tokens_per_s": raw["tokens_per_s"]})
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(
        [p["batch_size"] for p in points],
        [p["tokens_per_s"] for p in points],
        "o-",
        label="raw vLLM chat()",
    )
    ax.axhline(
        extract["pipeline"]["tokens_per_s"],
        color="tab:orange",
        ls="--",
        label=f"worker path, batches of {extract['batch_size']}",
    )
    ax.set_xscale("log", base=2)
    ax.set_xlabel("prompts per call (batch size)")
    ax.set_ylabel("output tokens/s")
    ax.set_title("Extraction throughput against batch size (SmolLM2-135M, CPU)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "perf-batch-size.png", dpi=90)
    plt.close(fig)


def _scaling(scaling: Mapping[str, Any], llm_s: float | None, out: Path, plt: Any) -> None:
    points = scaling["points"]
    sizes = [p["store_patterns"] for p in points]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    bottom = [0.0] * len(points)
    for key, label in (
        ("write_ms", "write"),
        ("embed_merge_ms", "embed + merge"),
        ("search_ms", "search"),
    ):
        values = [p[key] for p in points]
        ax.bar([str(s) for s in sizes], values, bottom=bottom, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    ax.set_xlabel("patterns in the store")
    ax.set_ylabel("store cost, ms per interaction")
    title = "Store cost per interaction against store size"
    if llm_s:
        rates = [1 / (llm_s + b / 1000) for b in bottom]
        title += "\n(interactions/s with the model: " + ", ".join(f"{r:.3f}" for r in rates) + ")"
    ax.set_title(title, fontsize=10)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "perf-scaling.png", dpi=90)
    plt.close(fig)


def _search(search: Mapping[str, Any], out: Path, plt: Any) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for ix in search["indexes"]:
        label = (
            f"{'halfvec' if ix['halfvec'] else 'vector'} m={ix['m']} efc={ix['ef_construction']}"
        )
        pts = ix["ef_search"]
        ax.plot([p["recall_at_10"] for p in pts], [p["qps"] for p in pts], "o-", label=label)
    ax.axvline(0.95, color="grey", ls=":")
    ax.set_xlabel("recall@10 (points: hnsw.ef_search, increasing)")
    ax.set_ylabel("queries/s (search statement)")
    ax.set_title(f"HNSW over {search['vectors']:,} vectors: recall against speed", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "perf-search.png", dpi=90)
    plt.close(fig)


def plot_all(details: Mapping[str, Any], out: Path) -> list[Path]:
    """Draw every plot whose bench ran into ``out``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if "extract" in details:
        _batch_sizes(details["extract"], out, plt)
        written.append(out / "perf-batch-size.png")
    if "scaling" in details:
        rate = details.get("extract", {}).get("pipeline", {}).get("interactions_per_s")
        _scaling(details["scaling"], 1 / rate if rate else None, out, plt)
        written.append(out / "perf-scaling.png")
    if "search" in details:
        _search(details["search"], out, plt)
        written.append(out / "perf-search.png")
    return written
