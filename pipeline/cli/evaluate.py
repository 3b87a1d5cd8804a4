"""``patterns eval GOLD --input CORPUS [--predictions FILE] [--json]``: extraction scored
against labelled deliveries (:mod:`pipeline.quality.metrics`).

Without ``--predictions`` the configured local engine (the default model) extracts the gold's
deliveries, read from CORPUS, first; with it, the file (the gold's format) is scored as it is,
with no model. ``--output`` writes the predictions made, in the same format, to score again
later. With ``--json`` the last stdout line is one JSON object of the figures.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipeline.cli.common import err, start
from pipeline.cli.quiet import engine_output
from pipeline.quality.gold import Labelled, read_inputs, read_labelled, write_labelled
from pipeline.quality.metrics import MATCH_THRESHOLD, EvalReport, score
from pipeline.settings import Settings


def _predict(settings: Settings, inputs: dict[str, str], verbose: bool) -> dict[str, Labelled]:
    """Load the local engine (its output to a log file unless ``verbose``) and extract."""
    from pipeline.llm.local import local_engine
    from pipeline.quality.evaluate import predict

    with engine_output(settings.data_dir / "logs", verbose=verbose, console=err):
        engine = local_engine(settings)
        try:
            return predict(engine, settings, inputs)
        finally:
            engine.close()


def _print(report: EvalReport) -> None:
    table = Table(title=f"patterns eval ({report.n} deliveries)", show_header=False)
    for key, value in report.model_dump(exclude={"per_type"}).items():
        table.add_row(
            key,
            "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value),
        )
    err.print(table)
    types = Table(title="per type")
    for column in ("type", "gold", "predicted", "matched", "precision", "recall", "f1"):
        types.add_column(column, justify="left" if column == "type" else "right")
    for kind, t in report.per_type.items():
        types.add_row(kind, str(t.gold), str(t.predicted), str(t.matched),
                      f"{t.precision:.2f}", f"{t.recall:.2f}", f"{t.f1:.2f}")  # fmt: skip
    err.print(types)


def eval_(
    gold: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="Gold JSONL.")],
    inputs: Annotated[
        list[Path],
        typer.Option(
            "--input",
            exists=True,
            dir_okay=False,
            help="Corpus JSONL(.gz) holding the gold's deliveries; may repeat.",
        ),
    ],
    predictions: Annotated[
        Path | None,
        typer.Option(
            "--predictions",
            exists=True,
            dir_okay=False,
            help="Score this file (the gold's format) instead of running the model.",
        ),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", help="Write the model's predictions here.")
    ] = None,
    threshold: Annotated[
        float, typer.Option("--threshold", min=0, max=1, help="Matching cosine similarity.")
    ] = MATCH_THRESHOLD,
    json_out: Annotated[bool, typer.Option("--json", help="End with one JSON object.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="Keep engine output here.")] = False,
) -> None:
    """Score extraction against GOLD: trivial_accuracy, precision, recall and f1 of patterns
    matched one to one by embedding similarity, type_accuracy, grounding_rate, title_copy_rate,
    relationship_recall, per type, n."""
    from pipeline.store.embedder import SentenceTransformerEmbedder

    settings = start(json_logs=json_out)
    labels = read_labelled(gold)
    texts = read_inputs(inputs, [g.delivery for g in labels])
    if predictions is not None:
        predicted = {p.delivery: p for p in read_labelled(predictions)}
    else:
        predicted = _predict(settings, texts, verbose)
        if output is not None:
            write_labelled(output, (predicted[g.delivery] for g in labels))
    embedder = SentenceTransformerEmbedder.from_settings(settings)
    report = score(labels, predicted, texts, embedder, threshold=threshold)
    _print(report)
    if json_out:
        sys.stdout.write(report.model_dump_json() + "\n")
        sys.stdout.flush()
