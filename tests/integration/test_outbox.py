"""The outbox sweeper and the producer commands on the embedded Postgres and the test Redis."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text, update

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import ApiKey, Interaction
from pipeline.intake.apikeys import authenticate, hash_key
from pipeline.intake.normalize import normalize_interaction
from pipeline.intake.outbox import SWEEP_LOCK_KEY, sweep_outbox
from pipeline.intake.store import store
from pipeline.settings import Settings
from workers.app import make_celery
from workers.dispatch import CeleryDispatcher

pytestmark = pytest.mark.integration

PATTERNS = Path(sys.executable).with_name("patterns")


def _settings(redis_url: str, **extra: Any) -> Settings:
    return Settings(
        database_url=None, redis_url=redis_url, outbox_stale_after_s=600, outbox_max_attempts=3,
        extract_batch_size=2, **extra,
    )  # type: ignore[arg-type]  # fmt: skip


def _store(db: Database, n: int) -> list[int]:
    items = [normalize_interaction({"project": "o/r", "content": f"text {i}"}) for i in range(n)]
    with db.session(ALL_PROJECTS) as s:
        return store(s, items).interaction_ids


def _age(db: Database, ids: list[int], seconds: float, **values: Any) -> None:
    """Pretend the interactions were last published ``seconds`` ago."""
    with db.session(ALL_PROJECTS) as s:
        s.execute(
            update(Interaction)
            .where(Interaction.id.in_(ids))
            .values(
                queued_at=func.now() - dt.timedelta(seconds=seconds),
                created_at=func.now() - dt.timedelta(seconds=seconds),
                **values,
            )
        )


def _rows(db: Database) -> dict[int, tuple[str, int, str | None]]:
    with db.session(ALL_PROJECTS) as s:
        return {
            i: (st, a, e)
            for i, st, a, e in s.execute(
                select(
                    Interaction.id, Interaction.status, Interaction.attempts, Interaction.last_error
                )
            ).all()
        }


def test_sweep_republishes_stale_and_buries_hopeless(
    db: Database, redis_url: str, queued_tasks: Any
) -> None:
    settings = _settings(redis_url)
    dispatcher = CeleryDispatcher(make_celery(settings), retry=False)
    fresh, never, stale, hopeless, done = (_store(db, 6)[i : i + 1] for i in range(0, 5))
    extra = _store(db, 6)[5:]
    _age(db, fresh, 10, status="queued", attempts=1)
    _age(db, never, 700)  # stored, publish failed: received, attempts 0
    _age(db, stale + extra, 700, status="queued", attempts=2)
    _age(db, hopeless, 700, status="queued", attempts=3)
    _age(db, done, 700, status="extracted", attempts=1)

    result = sweep_outbox(db=db, dispatcher=dispatcher, settings=settings)

    assert result.examined == 4 and not result.skipped_locked
    assert sorted(result.republished) == sorted(never + stale + extra)
    assert result.dead == hopeless and result.publish_failed == []
    rows = _rows(db)
    assert rows[fresh[0]] == ("queued", 1, None)
    assert rows[never[0]][:2] == ("queued", 1)
    assert rows[stale[0]][:2] == ("queued", 3) and rows[extra[0]][:2] == ("queued", 3)
    status, attempts, error = rows[hopeless[0]]
    assert (status, attempts) == ("dead", 3)
    assert error is not None and "3 delivery attempts" in error
    assert rows[done[0]] == ("extracted", 1, None)
    tasks = queued_tasks()
    assert [name for name, _ in tasks] == ["patterns.extract_batch"] * 2  # batches of 2
    assert sorted(i for _, (ids,) in tasks for i in ids) == sorted(never + stale + extra)

    # Right after, nothing is stale: the republished ones got a fresh queued_at.
    again = sweep_outbox(db=db, dispatcher=dispatcher, settings=settings)
    assert (again.examined, again.republished, again.dead) == (0, [], [])
    assert len(queued_tasks()) == 2


def test_a_second_sweep_waits_for_none(db: Database, redis_url: str) -> None:
    """While one sweep holds the advisory lock, another returns at once and does nothing."""
    settings = _settings(redis_url)
    ids = _store(db, 2)
    _age(db, ids, 700)
    with db.session(ALL_PROJECTS) as holder:
        holder.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": SWEEP_LOCK_KEY})
        result = sweep_outbox(
            db=db, dispatcher=CeleryDispatcher(make_celery(settings)), settings=settings
        )
    assert result.skipped_locked and result.examined == 0
    assert {r[0] for r in _rows(db).values()} == {"received"}


def test_sweep_with_the_broker_down_counts_no_attempt(db: Database) -> None:
    settings = _settings("redis://127.0.0.1:1/0")
    ids = _store(db, 3)
    _age(db, ids, 700)
    result = sweep_outbox(
        db=db, dispatcher=CeleryDispatcher(make_celery(settings), retry=False), settings=settings
    )
    assert sorted(result.publish_failed) == sorted(ids)
    assert {r[:2] for r in _rows(db).values()} == {("received", 0)}


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("PATTERNS_")}
    base.pop("DATABASE_URL", None)
    base.pop("REDIS_URL", None)
    return subprocess.run(
        [str(PATTERNS), *args], env={**base, **env}, capture_output=True, text=True, timeout=300
    )


def test_ingest_command_stores_and_enqueues_only(
    tmp_path: Path, database_url: str, db: Database, redis_url: str, queued_tasks: Any,
    shared_corpus: Path,
) -> None:  # fmt: skip
    with gzip.open(shared_corpus, "rt") as fh:
        lines = [next(fh) for _ in range(30)]
    data = tmp_path / "in.jsonl.gz"
    with gzip.open(data, "wt") as out:
        out.writelines([*lines, "{broken\n"])
    env = {"DATABASE_URL": database_url, "REDIS_URL": redis_url,
           "PATTERNS_EXTRACT_BATCH_SIZE": "8", "PATTERNS_DATA_DIR": str(tmp_path)}  # fmt: skip
    proc = _cli(["ingest", str(data), "--json"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["interactions"] == 30 and summary["new_interactions"] == 30
    assert summary["published"] == 30 and summary["malformed"] == 1
    assert summary["mode"] == "distributed"
    tasks = queued_tasks()
    assert [len(ids) for _, (ids,) in tasks] == [8, 8, 8, 6]
    rows = _rows(db)
    assert {r[:2] for r in rows.values()} == {("queued", 1)}
    with db.session(ALL_PROJECTS) as s:
        assert s.scalar(select(func.count()).select_from(text("llm_calls"))) == 0
    again = _cli(["ingest", str(data), "--json"], env)
    second = json.loads(again.stdout.strip().splitlines()[-1])
    # Already queued interactions are published again only by the sweeper, not by a re-ingest.
    assert second["new_interactions"] == 0 and second["already_stored"] == 30
    assert second["published"] == 0 and len(queued_tasks()) == 4
    assert len(_rows(db)) == 30


def test_apikey_command_prints_the_key_once(database_url: str, db: Database) -> None:
    proc = _cli(["apikey", "create", "acme/tools", "--name", "ci"], {"DATABASE_URL": database_url})
    assert proc.returncode == 0, proc.stderr[-3000:]
    key = proc.stdout.strip()
    assert key.startswith("pp_")
    with db.session(ALL_PROJECTS) as s:
        row = s.scalars(select(ApiKey)).one()
        assert row.key_hash == hash_key(key) and row.name == "ci" and key not in row.prefix + "x"
        principal = authenticate(s, key)
        assert principal is not None and principal.project_name == "acme/tools"
        assert authenticate(s, key + "x") is None


def test_beat_command_runs_the_sweep_schedule(tmp_path: Path, redis_url: str) -> None:
    """``patterns beat`` starts with the outbox sweep and keeps its state in the data folder;
    without a broker it refuses to start."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATTERNS_")}
    env.pop("DATABASE_URL", None)
    env.pop("REDIS_URL", None)
    no_broker = subprocess.run(
        [str(PATTERNS), "beat"], env={**env, "PATTERNS_DATA_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert no_broker.returncode == 2 and "REDIS_URL" in no_broker.stderr
    log = tmp_path / "beat.log"
    data = tmp_path / "data"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(PATTERNS), "beat", "--loglevel", "DEBUG"],
            env={**env, "REDIS_URL": redis_url, "PATTERNS_DATA_DIR": str(data)},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while "beat: Starting" not in log.read_text(errors="replace"):
                assert proc.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.2)
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    text_ = log.read_text(errors="replace")
    assert f"db -> {data / 'celerybeat-schedule'}" in text_
    assert "sweep-outbox" in text_ or "patterns.sweep_outbox" in text_, text_[-3000:]
    assert list(data.glob("celerybeat-schedule*"))


def test_sweep_leaves_interactions_with_a_claude_call_in_flight(
    db: Database, redis_url: str, queued_tasks: Any
) -> None:
    """An interaction handed to Claude holds no extract lease; its call's budget reservation is
    the lease: while it is live the sweep leaves the interaction alone, once it lapsed (the
    worker died) the interaction is published again."""
    from decimal import Decimal

    from pipeline.db.models import BudgetReservation
    from pipeline.spend.reservations import reserve

    settings = _settings(redis_url, daily_budget_usd=Decimal("1"))
    dispatcher = CeleryDispatcher(make_celery(settings), retry=False)
    at_claude, lapsed, plain = (_store(db, 3)[i : i + 1] for i in range(3))
    _age(db, at_claude + lapsed + plain, 700, status="queued", attempts=1)
    for iid in at_claude + lapsed:
        held = reserve(db, settings=settings, model="m", amount_usd=Decimal("0.01"),
                       task_type="pattern_extraction", interaction_id=iid)  # fmt: skip
        assert held is not None
    with db.session(ALL_PROJECTS) as s:
        s.execute(
            update(BudgetReservation)
            .where(BudgetReservation.interaction_id.in_(lapsed))
            .values(lease_expires_at=func.now() - dt.timedelta(seconds=1))
        )

    result = sweep_outbox(db=db, dispatcher=dispatcher, settings=settings)

    assert sorted(result.republished) == sorted(lapsed + plain)
    assert _rows(db)[at_claude[0]][:2] == ("queued", 1)
    assert sorted(i for _, (ids,) in queued_tasks() for i in ids) == sorted(lapsed + plain)
