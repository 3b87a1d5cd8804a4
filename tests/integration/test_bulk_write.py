"""The writer's fast path (:func:`pipeline.extract.bulk.write_batch`) against its definition,
:func:`pipeline.extract.write.write_one` on each interaction in turn, on the real Postgres: the
same rows, edges, events and statuses for a batch that exercises every decision (twins in the
store and earlier in the batch, edges to earlier patterns and repeated edges, failures, trivial
results, duplicate titles, an interaction written on its own), a fixed number of statements
whatever the batch's length, and a fall-back when rows of the same extraction exist already."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import event, select, text

from pipeline.db.engine import ALL_PROJECTS, Database, ProjectScope, rescope
from pipeline.db.models import Interaction, Pattern, PatternEvent, PatternRelationship
from pipeline.db.status import ExtractionMethod
from pipeline.extract.bulk import write_batch
from pipeline.extract.schemas import ExtractionResult
from pipeline.extract.write import ExtractionBatchResult, Provenance, Work, write_one
from pipeline.intake.normalize import NormalizedInteraction
from pipeline.intake.store import store
from pipeline.settings import Settings
from pipeline.store.events import lock_projects

pytestmark = pytest.mark.integration

OLD = "Pin the broker client version"


def _source() -> Provenance:
    settings = Settings(database_url=None, redis_url=None)
    return Provenance("key-1", "test-model", ExtractionMethod.LOCAL_LLM, settings)


def _p(title: str, type_: str = "error_handling") -> dict[str, Any]:
    return {"type": type_, "title": title, "description": f"About {title}.",
            "evidence": "retry fix", "confidence": 0.8}  # fmt: skip


def _e(source: str, target: str, type_: str = "related_to") -> dict[str, Any]:
    return {"source": source, "target": target, "type": type_, "strength": 0.5,
            "confidence": 0.6}  # fmt: skip


def _result(patterns: list[dict[str, Any]], edges: list[dict[str, Any]]) -> ExtractionResult:
    return ExtractionResult.model_validate(
        {"trivial": False, "patterns": patterns, "relationships": edges}
    )


#: One batch exercising every decision of the writer, in interaction order.
BATCH: list[ExtractionResult | str | None] = [
    # Two new patterns, an edge between them and one to the store's pattern.
    _result([_p("Retry with backoff"), _p("Test the reconnect", "testing")],
            [_e("Test the reconnect", "Retry with backoff"),
             _e("Retry with backoff", OLD, "depends_on")]),
    # A twin of the first interaction's pattern (normalised title, same type), and an edge to a
    # pattern of the first interaction by name.
    _result([_p("retry, with BACKOFF!"), _p("Log every retry", "best_practice")],
            [_e("Log every retry", "Retry with backoff"),
             _e("Log every retry", "Test the reconnect")]),
    None,  # a failure
    "trivial",
    # Written on its own: a supersedes edge retires the store's pattern.
    _result([_p("Pin the broker client and its transport")],
            [_e("Pin the broker client and its transport", OLD, "supersedes")]),
    # A twin in the store (retired above: so a new active pattern), a repeated edge, an
    # unresolved edge.
    _result([_p(OLD), _p("Test the reconnect", "testing"), _p("Retry with backoff")],
            [_e("Test the reconnect", "Retry with backoff"), _e("Retry with backoff", "Nowhere")]),
    # The same title twice in one output; a self-loop.
    _result([_p("Close the channel"), _p("Close the channel", "testing")],
            [_e("Close the channel", "Close the channel")]),
    # Same normalised title as an earlier pattern, another type: not a twin.
    _result([_p("Retry with backoff", "testing")], [_e("Retry with backoff", "Log every retry")]),
]  # fmt: skip


def _interactions(db: Database, project: str, n: int) -> list[int]:
    records = [
        NormalizedInteraction(project=project, source="api", kind="pull_request",
                              content=f"PR {i}: retry fix", idempotency_key=f"{project}:{i}")
        for i in range(n)
    ]  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        return store(s, records).interaction_ids


def _works(ids: Sequence[int], batch: Sequence[ExtractionResult | str | None]) -> list[Work]:
    out = []
    for iid, item in zip(ids, batch, strict=True):
        if item is None:
            out.append(Work(iid, 2, None, "invalid JSON (after 2 attempts)"))
        elif item == "trivial":
            out.append(Work(iid, 1, ExtractionResult.model_validate({"trivial": True}), None))
        else:
            assert isinstance(item, ExtractionResult)
            out.append(Work(iid, 1, item, None))
    return out


def _project_id(db: Database, iid: int) -> uuid.UUID:
    with db.session(ALL_PROJECTS) as s:
        return s.scalars(select(Interaction.project_id).where(Interaction.id == iid)).one()


def _write(db: Database, works: Sequence[Work], *, bulk: bool) -> ExtractionBatchResult:
    out = ExtractionBatchResult()
    project_id = _project_id(db, works[0].interaction_id)
    with db.session(ALL_PROJECTS) as session:
        lock_projects(session, {project_id})
        if bulk:
            write_batch(session, [(w, project_id) for w in works], _source(), out)
        else:
            for w in works:
                with session.begin_nested():
                    rescope(session, ProjectScope(project_id))
                    write_one(session, w, _source(), out)
    return out


def _snapshot(db: Database, ids: Sequence[int]) -> dict[str, Any]:
    """The project's rows with ids replaced by (interaction index, title, type)."""
    index = {iid: i for i, iid in enumerate(ids)}
    project_id = _project_id(db, ids[0])
    with db.session(ProjectScope(project_id)) as s:
        patterns = s.scalars(select(Pattern)).all()
        names = {p.id: (index.get(p.source_interaction_id or 0, -1), p.title, p.type)
                 for p in patterns}  # fmt: skip

        def name(pid: uuid.UUID | None) -> tuple[int, str, str]:
            return names[pid] if pid is not None else (-2, "", "")

        edges = s.scalars(select(PatternRelationship)).all()
        events: Any = s.execute(
            select(PatternEvent.event_type, PatternEvent.pattern_id, PatternEvent.payload)
            .where(PatternEvent.event_type != "interaction.received")
            .order_by(PatternEvent.id)
        ).all()
        inters = s.execute(
            select(Interaction.id, Interaction.status, Interaction.trivial,
                   Interaction.last_error, Interaction.extraction_key, Interaction.metadata_)
            .where(Interaction.id.in_(list(ids)))
        ).all()  # fmt: skip
    return {
        "patterns": sorted(
            (name(p.id), p.is_active, name(p.superseded_by), name(p.supersedes),
             p.validation_count, p.validation_status, p.evidence_grounded, p.title_copy,
             p.content["description"])
            for p in patterns
        ),
        "edges": sorted(
            (name(e.source_pattern_id), name(e.target_pattern_id), e.relationship_type,
             round(e.strength, 6), e.validation_count, index.get(e.source_interaction_id or 0, -1))
            for e in edges
        ),
        "events": [(t, name(pid),
                    {k: v for k, v in payload.items() if k not in ("interaction_id", "canonical_id",
                                                                   "merged_id", "superseded_by")})
                   for t, pid, payload in events],
        "interactions": sorted(
            (index[i.id], i.status, i.trivial, i.last_error, i.extraction_key, i.metadata_)
            for i in inters
        ),
    }  # fmt: skip


def _seeded(db: Database, project: str) -> list[int]:
    """A project whose store holds :data:`OLD` from an earlier batch; returns the batch's ids."""
    ids = _interactions(db, project, len(BATCH) + 1)
    _write(db, _works(ids[:1], [_result([_p(OLD)], [])]), bulk=False)
    return ids[1:]


def test_the_fast_path_stores_what_write_one_stores(db: Database) -> None:
    bulk_ids, one_ids = _seeded(db, "acme/bulk"), _seeded(db, "acme/one")
    with _statements(db) as fast:
        bulk = _write(db, _works(bulk_ids, BATCH), bulk=True)
    with _statements(db) as slow:
        one = _write(db, _works(one_ids, BATCH), bulk=False)

    expected = _snapshot(db, one_ids)
    assert _snapshot(db, bulk_ids) == expected
    # By the fast path, not its fall-back (which costs what write_one costs): 73 against 128
    # statements when measured, merges and the interaction written on its own included.
    assert len(fast) < 0.75 * len(slow), (len(fast), len(slow))
    # The batch did what it was built to do (so the comparison compares something).
    assert (one.merged, one.relationships, one.unresolved_relationships) == (3, 6, 2)
    assert (bulk.merged, bulk.relationships, bulk.unresolved_relationships) == (3, 6, 2)
    assert len(bulk.pattern_ids) == len(one.pattern_ids) == 10
    assert [bulk_ids.index(i) for i in bulk.extracted] == [0, 1, 3, 4, 5, 6, 7]
    assert [bulk_ids.index(i) for i in bulk.failed] == [2]
    assert [bulk_ids.index(i) for i in bulk.trivial] == [3]
    retired = [p for p in expected["patterns"] if p[0] == (-1, OLD, "error_handling")]
    assert retired and retired[0][1] is False  # superseded by interaction 4's pattern
    repeated = [e for e in expected["edges"] if e[4] == 1]
    assert len(repeated) == 1  # "Test the reconnect" → "Retry with backoff", seen twice


def test_a_second_write_of_the_same_batch_changes_nothing(db: Database) -> None:
    ids = _seeded(db, "acme/again")
    _write(db, _works(ids, BATCH), bulk=True)
    before = _snapshot(db, ids)
    again = _write(db, _works(ids, BATCH), bulk=True)
    assert _snapshot(db, ids) == before
    assert not again.extracted and not again.pattern_ids


@contextmanager
def _statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(db.engine, "before_cursor_execute", count)


def _plain(n: int, tag: str) -> list[ExtractionResult]:
    return [
        _result([_p(f"{tag} lesson {i} one"), _p(f"{tag} lesson {i} two", "testing")],
                [_e(f"{tag} lesson {i} one", f"{tag} lesson {i} two")])
        for i in range(n)
    ]  # fmt: skip


def test_the_statements_do_not_grow_with_the_batch(db: Database) -> None:
    counts = []
    for n, tag in ((4, "small"), (24, "large")):
        ids = _interactions(db, f"acme/{tag}", n)
        with _statements(db) as seen:
            out = _write(db, _works(ids, _plain(n, tag)), bulk=True)
        assert len(out.extracted) == n and out.relationships == n
        counts.append(len(seen))
    assert counts[0] == counts[1], counts
    assert counts[0] <= 16, counts  # write_one alone needs about a dozen per interaction


def test_rows_of_the_same_extraction_fall_back_to_write_one(db: Database) -> None:
    ids = _interactions(db, "acme/rerun", 3)
    results = _plain(3, "rerun")
    project_id = _project_id(db, ids[0])
    _write(db, _works(ids[1:2], results[1:2]), bulk=False)
    with db.session(ALL_PROJECTS) as s:  # written, then queued again with its rows kept
        s.execute(text("UPDATE interactions SET status = 'queued' WHERE id = :i"), {"i": ids[1]})
    out = _write(db, _works(ids, results), bulk=True)
    assert out.extracted == ids
    with db.session(ProjectScope(project_id)) as s:
        titles = s.scalars(select(Pattern.title)).all()
        statuses = set(s.scalars(select(Interaction.status).where(Interaction.id.in_(ids))))
    assert sorted(titles) == sorted(p.title for r in results for p in r.patterns)
    assert statuses == {"extracted"}
