"""``patterns eval``'s metric on hand-made cases with the real MiniLM embedder: the shared gold
scored as its own predictions (perfect), no predictions and all-trivial ones (empty), the gold
shifted by one delivery (scores low: the metric can fail), and types swapped (matches stand,
type accuracy falls); and the command end to end on a predictions file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.quality.gold import Labelled, LabelledPattern, read_inputs, read_labelled
from pipeline.quality.metrics import MATCH_THRESHOLD, match_pairs, score

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("restore_logging")]

GOLD = Path(__file__).resolve().parents[2].parent / "shared/data/github/celery-gold.jsonl"
KEYS = {"trivial_accuracy", "precision", "recall", "f1", "type_accuracy", "grounding_rate",
        "title_copy_rate", "relationship_recall", "per_type", "n"}  # fmt: skip


@pytest.fixture(scope="module")
def gold(shared_corpus: Path) -> tuple[list[Labelled], dict[str, str]]:
    if not GOLD.is_file():
        pytest.skip(f"{GOLD} not found")
    labels = read_labelled(GOLD)
    return labels, read_inputs([shared_corpus], [g.delivery for g in labels])


def test_the_gold_scores_perfectly_as_its_own_predictions(gold, embedder) -> None:  # type: ignore[no-untyped-def]
    labels, inputs = gold
    report = score(labels, {g.delivery: g for g in labels}, inputs, embedder)
    assert report.n == 40 and report.gold_patterns == 26 and report.gold_relationships == 2
    for key in ("trivial_accuracy", "precision", "recall", "f1", "type_accuracy",
                "grounding_rate", "relationship_recall"):  # fmt: skip
        assert getattr(report, key) == pytest.approx(1.0), key
    assert report.title_copy_rate == 0.0
    assert all(t.f1 == pytest.approx(1.0) for t in report.per_type.values())
    assert set(report.model_dump()) >= KEYS


def test_no_predictions_score_zero(gold, embedder) -> None:  # type: ignore[no-untyped-def]
    labels, inputs = gold
    report = score(labels, {}, inputs, embedder)
    assert report.failed == 40 and report.predicted_patterns == 0
    assert (report.precision, report.recall, report.f1) == (0.0, 0.0, 0.0)
    assert report.type_accuracy is None and report.grounding_rate is None
    assert report.relationship_recall == 0.0
    # A failed delivery counts as "not trivial": right only on the 23 non-trivial ones.
    assert report.trivial_accuracy == pytest.approx(23 / 40)


def test_all_trivial_predictions_get_only_the_trivial_ones_right(gold, embedder) -> None:  # type: ignore[no-untyped-def]
    labels, inputs = gold
    empty = {g.delivery: Labelled(delivery=g.delivery, trivial=True) for g in labels}
    report = score(labels, empty, inputs, embedder)
    assert report.trivial_accuracy == pytest.approx(17 / 40)
    assert report.predicted_trivial == 40 and report.f1 == 0.0


def test_predictions_shifted_by_one_delivery_score_low(gold, embedder) -> None:  # type: ignore[no-untyped-def]
    labels, inputs = gold
    shifted = {
        g.delivery: labels[(i + 1) % len(labels)].model_copy(update={"delivery": g.delivery})
        for i, g in enumerate(labels)
    }
    report = score(labels, shifted, inputs, embedder)
    assert report.f1 < 0.2 and report.recall < 0.2
    assert report.trivial_accuracy < 0.7
    assert report.grounding_rate is not None and report.grounding_rate < 0.2
    assert report.relationship_recall == 0.0


def test_swapped_types_keep_matches_but_lose_type_accuracy(gold, embedder) -> None:  # type: ignore[no-untyped-def]
    labels, inputs = gold
    other = {"bug_fix": "feature"}

    def swap(p: LabelledPattern) -> LabelledPattern:
        return p.model_copy(update={"type": other.get(p.type, "bug_fix")})

    swapped = {
        g.delivery: g.model_copy(update={"patterns": [swap(p) for p in g.patterns]}) for g in labels
    }
    report = score(labels, swapped, inputs, embedder)
    assert report.f1 == pytest.approx(1.0)
    assert report.type_accuracy == 0.0
    assert all(t.matched == 0 and t.f1 == 0.0 for t in report.per_type.values())


def test_a_title_copy_and_an_invented_quote_are_flagged(embedder) -> None:  # type: ignore[no-untyped-def]
    content = "Pull request #7: Fix retry of broker connections\n\nAdds a backoff loop."
    gold = [Labelled(delivery="d", patterns=[LabelledPattern(
        type="error_handling", title="Back off between reconnects",
        description="Wait longer after each failed broker connection attempt.",
        evidence="Adds a backoff loop")])]  # fmt: skip
    predicted = Labelled(delivery="d", patterns=[LabelledPattern(
        type="error_handling", title="Fix retry of broker connections",
        description="Retry broker connections with a backoff loop.",
        evidence="a quote that is not there")])  # fmt: skip
    report = score(gold, {"d": predicted}, {"d": content}, embedder)
    assert report.title_copy_rate == 1.0 and report.grounding_rate == 0.0
    assert report.matched == 1  # on topic: the lesson is matched, the copy is reported apart


def test_matching_is_one_to_one_and_thresholded() -> None:
    sim = np.array([[0.9, 0.8], [0.85, 0.3], [0.2, 0.1]])
    assert match_pairs(sim, 0.5) == [(0, 0, 0.9)]
    assert [(g, p) for g, p, _ in match_pairs(sim, 0.25)] == [(0, 0), (1, 1)]
    assert match_pairs(np.zeros((0, 2)), MATCH_THRESHOLD) == []


def test_eval_command_scores_a_predictions_file(gold, shared_corpus: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = CliRunner().invoke(
        app,
        ["eval", str(GOLD), "--input", str(shared_corpus), "--predictions", str(GOLD), "--json"],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(figures) >= KEYS and figures["f1"] == 1.0 and figures["n"] == 40
