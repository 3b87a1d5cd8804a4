"""The TypeScript error-fix batch on the real embedded Postgres, with the real lock, the real
beat schedule entry, the real local model and (where npm could install it) the real tsc."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import CodeAnalysis, LLMCall, TypeScriptError
from pipeline.errorfix.batch import BATCH_LOCK_KEY, process_batch
from pipeline.errorfix.compiler import check_fixes, find_tsc
from pipeline.errorfix.parsing import read_diagnostics
from pipeline.errorfix.store import acceptance, claim, review, store_diagnostics
from pipeline.settings import Settings, get_settings

pytestmark = pytest.mark.integration

TSC_ERRORS = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "typescript" / "tsc-errors.jsonl"
)


@pytest.fixture()
def tsc_records() -> Path:
    if not TSC_ERRORS.is_file():
        pytest.skip(f"{TSC_ERRORS} not found (../shared must sit beside the checkout)")
    return TSC_ERRORS


def _statuses(db: Database) -> dict[str, int]:
    with db.session(ALL_PROJECTS) as s:
        return dict(
            s.execute(
                select(TypeScriptError.status, func.count()).group_by(TypeScriptError.status)
            ).all()
        )


def test_import_is_idempotent(db: Database, tsc_records: Path, tmp_path: Path) -> None:
    tsc_out = tmp_path / "build.log"
    tsc_out.write_text(
        "src/a.ts(3,7): error TS2322: Type 'string' is not assignable to type 'number'.\n"
    )
    diagnostics, malformed = read_diagnostics([tsc_records, tsc_out], "acme/web")
    assert malformed == [] and len(diagnostics) == 340
    assert store_diagnostics(db, diagnostics) == 340
    assert store_diagnostics(db, diagnostics) == 0
    assert _statuses(db) == {"pending": 340}


def test_concurrent_claims_are_disjoint(db: Database, tsc_records: Path) -> None:
    diagnostics, _ = read_diagnostics([tsc_records], "x")
    store_diagnostics(db, diagnostics)
    claimed: list[list[int]] = []
    barrier = threading.Barrier(4)

    def worker() -> None:
        barrier.wait()
        for _ in range(20):
            claimed.append(claim(db, 10, stale_after_s=3600))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for batch in claimed for i in batch]
    assert len(ids) == len(set(ids)) == 339
    assert _statuses(db) == {"processing": 339}


def test_a_batch_that_finds_the_lock_taken_does_nothing(
    db: Database, tsc_records: Path, model_settings: Settings
) -> None:
    store_diagnostics(db, read_diagnostics([tsc_records], "x")[0][:5])
    with db.engine.connect() as other:
        assert other.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": BATCH_LOCK_KEY})
        summary = process_batch(db=db, engine=None, embedder=None, settings=model_settings)  # type: ignore[arg-type]
        other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": BATCH_LOCK_KEY})
        other.commit()
    assert summary.locked_out and summary.processed == 0
    assert _statuses(db) == {"pending": 5}


def test_beat_entry_runs_a_batch_that_learns_from_accepted_fixes(
    db: Database, tsc_records: Path, vllm_engine: object, embedder: object, model_settings: Settings
) -> None:
    from workers import resources
    from workers.app import BEAT_SCHEDULE, ERRORFIX_INTERVAL_S, TASK_ROUTES, app

    app.loader.import_default_modules()  # what a worker does at start: the app's `include`
    entry = BEAT_SCHEDULE["errorfix-batch"]
    assert entry["schedule"] == ERRORFIX_INTERVAL_S == 600
    assert TASK_ROUTES[str(entry["task"])] == {"queue": "errorfix"}
    store_diagnostics(db, read_diagnostics([tsc_records], "x")[0][:12])
    installed = resources.Resources(
        get_settings(),
        db=db,
        engine=vllm_engine,
        embedder=embedder,  # type: ignore[arg-type]
    )
    with resources.use(installed):
        first = app.tasks[str(entry["task"])].apply(kwargs={"limit": 6}).get()
        assert first["processed"] == 6 and first["suggested"] + first["failed"] == 6
        assert first["failed"] <= 1 and first["retrieved_examples"] == 0
        with db.session(ALL_PROJECTS) as s:
            rows = s.execute(select(TypeScriptError).order_by(TypeScriptError.id)).scalars().all()
            for row in rows[:6]:
                if row.status == "ai_suggested":
                    assert row.suggested_fix and row.fix_model and row.fix_confidence is not None
                else:
                    assert row.status == "failed" and row.failure_reason
            suggested = [r.id for r in rows[:6] if r.status == "ai_suggested"]
            assert (
                s.scalar(
                    select(func.count())
                    .select_from(LLMCall)
                    .where(LLMCall.task_type == "error_fix")
                )
                >= 6
            )
        for error_id in suggested[:2]:
            review(db, error_id, accepted=True)
        review(db, suggested[2], accepted=False)
        report = acceptance(db)
        assert report.accepted == 2 and report.acceptance_rate == pytest.approx(2 / 3, abs=1e-3)

        second = app.tasks[str(entry["task"])].apply(kwargs={"limit": 6}).get()
        assert second["processed"] == 6
        assert second["retrieved_examples"] == 2 * second["suggested"] + 2 * second["failed"]
        with db.session(ALL_PROJECTS) as s:
            newest = s.scalars(select(CodeAnalysis).order_by(CodeAnalysis.id.desc()).limit(1)).one()
            accepted_ids = set(
                s.scalars(select(CodeAnalysis.id).where(CodeAnalysis.status == "accepted")).all()
            )
        assert set(newest.retrieved_example_ids) == accepted_ids
        if find_tsc(model_settings.tsc_path):
            assert second["tsc_checked"] == second["suggested"]
            assert newest.compiles is not None
        assert _statuses(db).get("pending") is None or _statuses(db)["pending"] == 0


def test_tsc_check_tells_a_real_fix_from_prose(model_settings: Settings) -> None:
    tsc = find_tsc(model_settings.tsc_path)
    if tsc is None:
        pytest.skip("no tsc (make install puts one in .tools/ where npm exists)")
    checks = check_fixes(
        tsc,
        {
            1: ("const x: number = 1;", "TS2322"),  # fixed
            2: ('const x: number = "a";', "TS2322"),  # still wrong
            3: ("The error TS2322: use a number.", "TS2322"),  # prose, not code
        },
    )
    assert checks[1].compiles and checks[1].error_resolved
    assert not checks[2].compiles and not checks[2].error_resolved
    assert not checks[3].error_resolved
