"""Reading input files: JSONL or JSONL.gz lines become normalised records, stored in chunks.

A bad line becomes a :class:`MalformedRecord` (``file:line`` and the reason) and reading goes
on; :func:`ingest_paths` stores the rest in chunks of :data:`STORE_CHUNK` records, one
transaction each (:func:`pipeline.intake.store.store`).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.errors import MalformedInputError
from pipeline.intake.normalize import Normalized, parse_record
from pipeline.intake.store import store
from pipeline.types import Progress

log = structlog.get_logger(__name__)

#: Records stored per transaction by :func:`ingest_paths`.
STORE_CHUNK = 500


@dataclass(frozen=True)
class MalformedRecord:
    """An input line that could not be understood; ``where`` is ``file:line``."""

    where: str
    reason: str


def read_records(
    paths: Iterable[Path], limit: int | None = None
) -> Iterator[Normalized | MalformedRecord]:
    """Read JSONL or JSONL.gz files (``.gz`` by name) and normalise each non-blank line.

    Yields at most ``limit`` records (malformed ones included) across all files, in order.
    A bad line yields a :class:`MalformedRecord` and reading goes on.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    count = 0
    for path in paths:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if limit is not None and count >= limit:
                    return
                if not line.strip():
                    continue
                count += 1
                where = f"{path}:{lineno}"
                try:
                    yield parse_record(json.loads(line))
                except json.JSONDecodeError as exc:
                    yield MalformedRecord(where, f"invalid JSON: {exc.msg}")
                except MalformedInputError as exc:
                    yield MalformedRecord(where, str(exc))


@dataclass
class IngestReport:
    """What reading and storing the input gave."""

    interaction_ids: list[int] = field(default_factory=list)
    created: int = 0
    existing: int = 0
    skipped_deliveries: int = 0
    malformed: list[MalformedRecord] = field(default_factory=list)


def ingest_paths(
    db: Database, paths: Iterable[Path], *, limit: int | None = None,
    progress: Progress | None = None,
) -> IngestReport:  # fmt: skip
    """Read, normalise and store the records of ``paths`` in chunks of :data:`STORE_CHUNK`, one
    transaction each (:func:`pipeline.intake.store.store`); malformed lines are logged and
    counted, the rest goes on. ``progress("ingest", stored, 0)`` after each chunk.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    report = IngestReport()
    seen: set[int] = set()
    chunk: list[Normalized] = []

    def flush() -> None:
        if not chunk:
            return
        with db.session(ALL_PROJECTS) as session:
            result = store(session, chunk)
        for iid in result.interaction_ids:
            if iid not in seen:
                seen.add(iid)
                report.interaction_ids.append(iid)
        report.created += result.created
        report.existing += result.existing
        report.skipped_deliveries += result.skipped
        chunk.clear()
        if progress:
            progress("ingest", len(report.interaction_ids), 0)

    for record in read_records(paths, limit):
        if isinstance(record, MalformedRecord):
            log.warning("malformed_record", where=record.where, reason=record.reason)
            report.malformed.append(record)
            continue
        chunk.append(record)
        if len(chunk) >= STORE_CHUNK:
            flush()
    flush()
    return report
