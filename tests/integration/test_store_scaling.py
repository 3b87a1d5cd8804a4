"""The store's per-interaction work does not grow with the store (docs/PERFORMANCE.md, "Scaling"),
on the real Postgres: ``usage_count`` is a counter kept in step with the usage rows (searches,
concurrent servings, merges), serving a pattern rewrites no index entry (the ``patterns``
fillfactor of migration 0011 leaves room for a HOT update), and the title look-ups of the
writer probe their indexes instead of scanning the project's patterns."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from sqlalchemy import create_engine, event, func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.engine import ALL_PROJECTS, Database, ProjectScope
from pipeline.db.models import Interaction, Pattern, PatternUsage
from pipeline.extract.relationships import project_titles
from pipeline.settings import Settings
from pipeline.store.merge import merge_into, title_twin
from pipeline.store.search import search
from pipeline.store.usage import record_usage
from pipeline.text import normalize_title

pytestmark = pytest.mark.integration

TYPES = ("bug_fix", "testing")


def _vectors(n: int, seed: int) -> np.ndarray:
    """``n`` random unit 384-d vectors."""
    x = np.random.default_rng(seed).standard_normal((n, 384)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _store_patterns(db: Database, iid: int, n: int) -> tuple[uuid.UUID, list[uuid.UUID]]:
    """``n`` active, embedded patterns of interaction ``iid``'s project (types alternating,
    about 1.8 kB a row with the vector, as real ones); returns the project and their ids."""
    with db.session(ALL_PROJECTS) as s:
        project = s.scalar(select(Interaction.project_id).where(Interaction.id == iid))
        assert project is not None
        ids = [
            s.scalar(
                insert(Pattern).values(
                    project_id=project, type=TYPES[i % 2], title=f"idea {i} of the store",
                    content={"description": f"what idea {i} says", "evidence": "a diff"},
                    embedding=vec, source_interaction_id=iid, extraction_key="k",
                ).returning(Pattern.id)
            )
            for i, vec in enumerate(_vectors(n, seed=n))
        ]  # fmt: skip
    return project, [i for i in ids if i is not None]


def _counts(db: Database) -> dict[uuid.UUID, tuple[int, int]]:
    """Pattern id → ``(usage_count, its pattern_usage rows)``."""
    with db.session(ALL_PROJECTS) as s:
        rows = dict(
            s.execute(
                select(PatternUsage.pattern_id, func.count()).group_by(PatternUsage.pattern_id)
            ).all()
        )
        counts = s.execute(select(Pattern.id, Pattern.usage_count)).all()
    return {pid: (n, rows.get(pid, 0)) for pid, n in counts}


def test_usage_count_follows_every_search_and_merge(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    (iid,) = stored_interactions(1)
    project, _ = _store_patterns(db, iid, 30)
    queries = _vectors(6, seed=99)
    served: dict[uuid.UUID, int] = {}
    for i, q in enumerate([*queries, queries[0], queries[0]]):
        hits = search(db, q.tolist(), project_id=project, k=3 + i)
        for hit in hits:
            served[hit.id] = served.get(hit.id, 0) + 1
            assert hit.usage_count == served[hit.id]
    counts = _counts(db)
    assert {pid: n for pid, (n, _) in counts.items() if n} == served
    assert all(n == rows for n, rows in counts.values())
    canonical, merged = sorted(served, key=lambda pid: -served[pid])[:2]
    with db.session(ProjectScope(project)) as s:
        merge_into(s, canonical_id=canonical, merged_id=merged, settings=Settings(
            database_url=None, redis_url=None), match="embedding", distance=0.05)  # fmt: skip
    after = _counts(db)
    assert after[canonical] == (served[canonical] + served[merged],) * 2


def _wait_for_lock_wait(database_url: str, timeout: float = 20.0) -> None:
    """Return once some session of the test database waits on a lock."""
    engine = create_engine(database_url)
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as conn:
            while time.monotonic() < deadline:
                waiting = conn.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    )
                )
                if waiting:
                    return
                conn.rollback()
                time.sleep(0.05)
    finally:
        engine.dispose()
    raise AssertionError("the second serving never waited for the first")


def test_concurrent_servings_of_one_pattern_are_all_counted(
    db: Database, database_url: str, stored_interactions: Callable[..., list[int]]
) -> None:
    """The second serving waits for the first's row lock; a recount in its statement would not
    see the first's row (its snapshot predates the first's commit) and store 1."""
    (iid,) = stored_interactions(1)
    project, (pid, *_) = _store_patterns(db, iid, 2)
    errors: list[BaseException] = []

    def second() -> None:
        try:
            with db.session(ALL_PROJECTS) as s:
                record_usage(s, {pid: project}, used_by="test:second", context={})
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    with db.session(ALL_PROJECTS) as first:
        record_usage(first, {pid: project}, used_by="test:first", context={})
        worker = threading.Thread(target=second)
        worker.start()
        _wait_for_lock_wait(database_url)
    worker.join(timeout=30)
    assert not worker.is_alive() and not errors, errors
    assert _counts(db)[pid] == (2, 2)


def test_serving_patterns_updates_them_heap_only(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    """One served pattern per heap page, on pages filled by inserts: each update is HOT (no new
    index entries, the HNSW graph's included). With a full page (fillfactor 100: four such rows
    and under 1 kB free) the new version would go to another page and into every index."""
    (iid,) = stored_interactions(1)
    _store_patterns(db, iid, 24)
    with db.session(ALL_PROJECTS) as s:
        one_per_page = s.execute(
            text(
                "SELECT DISTINCT ON ((ctid::text::point)[0]) id, project_id FROM patterns "
                "ORDER BY (ctid::text::point)[0], id"
            )
        ).all()
        assert len(one_per_page) >= 6
        record_usage(s, {r.id: r.project_id for r in one_per_page}, used_by="test", context={})
        updated, hot = s.execute(
            text(
                "SELECT pg_stat_get_xact_tuples_updated('patterns'::regclass), "
                "pg_stat_get_xact_tuples_hot_updated('patterns'::regclass)"
            )
        ).one()
    assert (updated, hot) == (len(one_per_page), len(one_per_page))


def _plan(session: Session, call: Callable[[], Any]) -> list[str]:
    """The plan (``EXPLAIN``, sequential scans off so that the small test table does not hide
    a missing index) of the last statement ``call`` sends on ``session``'s connection."""
    conn = session.connection()
    sent: list[tuple[str, Any]] = []

    def grab(_c: Any, _cur: Any, statement: str, parameters: Any, *_: Any) -> None:
        sent.append((statement, parameters))

    event.listen(conn, "before_cursor_execute", grab)
    try:
        call()
    finally:
        event.remove(conn, "before_cursor_execute", grab)
    statement, parameters = sent[-1]
    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
    return list(conn.exec_driver_sql("EXPLAIN " + statement, parameters).scalars())


def _probes_title(plan: list[str]) -> bool:
    """The plan finds rows by normalised title in an index, not by filtering them."""
    return any("Index Cond" in line and "normalized_title" in line for line in plan)


def test_title_look_ups_probe_an_index(
    db: Database, stored_interactions: Callable[..., list[int]]
) -> None:
    (iid,) = stored_interactions(1)
    project, ids = _store_patterns(db, iid, 8)
    with db.session(ProjectScope(project)) as s:
        twin = title_twin(s, project, TYPES[0], "Idea 0 of the store!")
        assert twin == ids[0]
        plan = _plan(s, lambda: title_twin(s, project, TYPES[0], "idea 2 of the store"))
        assert _probes_title(plan), plan
        keys = {normalize_title("Idea 1 of the store"), normalize_title("no such idea")}
        assert project_titles(s, project, keys) == {"idea 1 of the store": ids[1]}
        plan = _plan(s, lambda: project_titles(s, project, keys))
        assert _probes_title(plan), plan
