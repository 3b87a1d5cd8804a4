"""The gold format of ``../shared/data/github/celery-gold.jsonl`` (see its README), which is
also the format of ``patterns eval --predictions``: one JSON object a line,

``{"delivery", "trivial": bool, "patterns": [{"type", "title", "description", "evidence"}],
"relationships": [{"source", "target", "type"}]}``

keyed by the GitHub delivery id; relationships name their ends by pattern title. Reading
(:func:`read_labelled`) and writing (:func:`write_labelled`), and the inputs of the labelled
deliveries (:func:`read_inputs`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.errors import MalformedInputError
from pipeline.intake.normalize import NormalizedInteraction
from pipeline.intake.records import read_records


class LabelledPattern(BaseModel):
    """One pattern of a labelled (or predicted) delivery."""

    model_config = ConfigDict(extra="ignore")
    type: str
    title: str
    description: str = ""
    evidence: str = ""


class LabelledRelationship(BaseModel):
    """An edge between two patterns of the same delivery, named by their titles."""

    model_config = ConfigDict(extra="ignore")
    source: str
    target: str
    type: str


class Labelled(BaseModel):
    """One delivery's labels (gold) or extraction (predictions). ``failed``: the extractor gave
    no valid answer (predictions only; such a delivery counts as non-trivial, no patterns)."""

    model_config = ConfigDict(extra="ignore")
    delivery: str
    trivial: bool = False
    patterns: list[LabelledPattern] = Field(default_factory=list)
    relationships: list[LabelledRelationship] = Field(default_factory=list)
    failed: bool = False


def read_labelled(path: Path) -> list[Labelled]:
    """Read a gold or predictions file (JSONL), in file order.

    Raises:
        MalformedInputError: a line that is not JSON of the format (``file:line`` and why), or a
            delivery listed twice.
    """
    out: list[Labelled] = []
    seen: set[str] = set()
    with path.open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                item = Labelled.model_validate(json.loads(line))
            except (json.JSONDecodeError, ValidationError) as exc:
                raise MalformedInputError(f"{path}:{number}: {exc}") from exc
            if item.delivery in seen:
                raise MalformedInputError(f"{path}:{number}: delivery {item.delivery} twice")
            seen.add(item.delivery)
            out.append(item)
    return out


def write_labelled(path: Path, items: Iterable[Labelled]) -> None:
    """Write ``items`` as a predictions file of the gold's format (one JSON object a line)."""
    with path.open("w", encoding="utf-8") as fh:
        for item in items:
            fh.write(item.model_dump_json(exclude_defaults=False) + "\n")


def read_inputs(paths: Sequence[Path], deliveries: Iterable[str]) -> dict[str, str]:
    """The normalised text (as extraction sees it, :mod:`pipeline.intake.normalize`) of each of
    ``deliveries`` found in the corpus files ``paths`` (JSONL or JSONL.gz of deliveries).

    Raises:
        MalformedInputError: a wanted delivery is not in the corpus.
    """
    wanted = set(deliveries)
    found: dict[str, str] = {}
    for record in read_records(list(paths)):
        if isinstance(record, NormalizedInteraction) and record.delivery_id in wanted:
            found[record.delivery_id] = record.content
    missing = sorted(wanted - set(found))
    if missing:
        raise MalformedInputError(
            f"{len(missing)} labelled deliveries not in the input, e.g. {missing[0]}"
        )
    return found
