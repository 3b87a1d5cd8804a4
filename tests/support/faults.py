"""The fault tests' rig and their one set of invariants.

:class:`Rig` runs real ``patterns worker`` processes (each in its own process group) against a
test database and Redis, kills and restarts them, and plays Celery beat: it publishes the
housekeeping sweep every few seconds (the real beat's minute is too long for a test), ignoring a
broker that is down. :func:`check` reads what every fault scenario must leave behind, and
:func:`record` appends a scenario's figures to ``$PATTERNS_TEST_FAULT_RESULTS`` (JSON lines),
from which ``bench/reliability_table.py`` writes the table of ``docs/RELIABILITY.md``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import (
    BudgetDay,
    BudgetReservation,
    Interaction,
    Pattern,
    PatternRelationship,
    PatternValidation,
)
from pipeline.intake.normalize import NormalizedInteraction
from pipeline.queues import QUEUE_HOUSEKEEPING, TaskName
from support.processes import start_worker, stop_group

#: Where an interaction may end. Anything else when a scenario is over is lost.
TERMINAL = ("extracted", "failed", "dead")
READY = re.compile(r"ready\.")
MARKER = re.compile(r"marker-(\d+)-end")


def interactions(n: int, prefix: str) -> list[NormalizedInteraction]:
    """``n`` small API conversations of project ``acme/widgets``, each carrying ``marker-I-end``
    (what the scripted model keys its answer on)."""
    return [
        NormalizedInteraction(
            project="acme/widgets", source="api", kind="conversation",
            idempotency_key=f"{prefix}-{i}",
            content=f"We retried the broker connection with backoff (change marker-{i}-end)",
        )
        for i in range(n)
    ]  # fmt: skip


def scripted_model(prompt: str, _seen_before: int) -> tuple[int, str, str]:
    """The loopback chat server's script (:mod:`support.chat_server`): :func:`extraction` for
    the prompt's marker, a 400 for any other prompt."""
    found = MARKER.search(prompt)
    if not found:
        return (400, "not an extraction of this test", "")
    return (200, json.dumps(extraction(int(found.group(1)))), "stop")


def local_model_env(url: str, batch: int) -> dict[str, str]:
    """Settings of an extract worker on the OpenAI-compatible engine at ``url`` (the loopback
    chat server), no SDK retries, batches of ``batch``, a 0.2 s linger."""
    return {
        "PATTERNS_LOCAL_ENGINE": "openai", "PATTERNS_OPENAI_BASE_URL": url,
        "PATTERNS_OPENAI_MODEL": "smol", "PATTERNS_OPENAI_MAX_RETRIES": "0",
        "PATTERNS_EXTRACT_BATCH_SIZE": str(batch), "PATTERNS_EXTRACT_LINGER_S": "0.2",
    }  # fmt: skip


def publisher(redis_url: str) -> Any:
    """A :class:`workers.dispatch.CeleryDispatcher` publishing to ``redis_url``."""
    from pipeline.settings import Settings
    from workers.app import make_celery
    from workers.dispatch import CeleryDispatcher

    return CeleryDispatcher(make_celery(Settings(redis_url=redis_url)))  # type: ignore[call-arg]


def extraction(i: int) -> dict[str, Any]:
    """The scripted model's answer for ``marker-I-end``: two patterns and an edge between them."""
    from support.replay_llm import edge, pattern

    first, second = f"Broker retry lesson {i}", f"Backoff schedule lesson {i}"
    return {
        "patterns": [pattern(first), pattern(second, "best_practice")],
        "relationships": [edge(second, first)],
    }


@dataclass
class Invariants:
    """What a fault scenario left behind (counts unless named otherwise)."""

    items_in: int = 0
    extracted: int = 0
    failed: int = 0
    dead: int = 0
    #: Interactions not in a terminal status: lost work.
    unfinished: int = 0
    #: ``failed``/``dead`` interactions with no ``last_error``.
    no_reason: int = 0
    patterns: int = 0
    #: Active patterns without an embedding: a lost follow-up.
    unembedded: int = 0
    duplicate_patterns: int = 0
    duplicate_relationships: int = 0
    duplicate_validations: int = 0
    leases_left: int = 0
    reservations_open: int = 0
    spent_usd: float = 0.0
    cap_usd: float | None = None
    #: 99th percentile, seconds, of stored → finished (``processed_at - created_at``).
    p99_s: float | None = None

    @property
    def lost(self) -> int:
        """Interactions or follow-ups that never finished."""
        return self.unfinished + self.unembedded

    @property
    def duplicates(self) -> int:
        """Doubled patterns, relationships and validations."""
        return self.duplicate_patterns + self.duplicate_relationships + self.duplicate_validations

    @property
    def overspend_usd(self) -> float:
        """Dollars spent past the day's cap (0 when there is no cap)."""
        return 0.0 if self.cap_usd is None else max(0.0, self.spent_usd - self.cap_usd)

    def assert_clean(self) -> None:
        """The properties every scenario must keep. Raises AssertionError naming the broken ones."""
        broken = {
            name: value
            for name, value in {
                "lost": self.lost, "no_reason": self.no_reason, "duplicates": self.duplicates,
                "leases_left": self.leases_left, "reservations_open": self.reservations_open,
                "overspend_usd": self.overspend_usd,
            }.items()
            if value
        }  # fmt: skip
        assert not broken, f"broken: {broken}; all: {self}"


def _duplicates(session: Any, *columns: Any) -> int:
    groups = (
        select(func.count().label("n"))
        .select_from(columns[0].class_)
        .group_by(*columns)
        .having(func.count() > 1)
        .subquery()
    )
    return int(session.scalar(select(func.coalesce(func.sum(groups.c.n - 1), 0))) or 0)


def check(db: Database, ids: Sequence[int]) -> Invariants:
    """Read the invariants of the interactions ``ids`` and of the whole store."""
    out = Invariants(items_in=len(ids))
    with db.session(ALL_PROJECTS) as s:
        rows = s.execute(
            select(Interaction.status, Interaction.last_error).where(Interaction.id.in_(ids))
        ).all()
        for status, error in rows:
            if status in TERMINAL:
                setattr(out, status, getattr(out, status) + 1)
                out.no_reason += status != "extracted" and not error
            else:
                out.unfinished += 1
        out.unfinished += len(ids) - len(rows)
        out.patterns = int(s.scalar(select(func.count()).select_from(Pattern)) or 0)
        out.unembedded = int(
            s.scalar(
                select(func.count()).where(Pattern.is_active.is_(True), Pattern.embedding.is_(None))
            )
            or 0
        )
        out.duplicate_patterns = _duplicates(s, Pattern.source_interaction_id, Pattern.title)
        out.duplicate_relationships = _duplicates(
            s, PatternRelationship.source_pattern_id, PatternRelationship.target_pattern_id,
            PatternRelationship.relationship_type,
        )  # fmt: skip
        out.duplicate_validations = _duplicates(
            s, PatternValidation.pattern_id, PatternValidation.validating_pattern_id,
            PatternValidation.validation_type, PatternValidation.interaction_id,
        )  # fmt: skip
        out.leases_left = int(
            s.scalar(select(func.count()).where(Interaction.lease_owner.is_not(None))) or 0
        )
        out.reservations_open = int(
            s.scalar(select(func.count()).where(BudgetReservation.status == "reserved")) or 0
        )
        day = s.execute(select(BudgetDay.spent_usd, BudgetDay.cap_usd)).all()
        out.spent_usd = float(sum(spent for spent, _ in day))
        out.cap_usd = float(sum(cap for _, cap in day)) if day else None
        out.p99_s = s.scalar(
            text(
                "SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY "
                "extract(epoch FROM processed_at - created_at)) FROM interactions "
                "WHERE processed_at IS NOT NULL AND id = ANY(:ids)"
            ),
            {"ids": list(ids)},
        )
    return out


def record(scenario: str, load: str, faults: str, inv: Invariants, rerun: str) -> None:
    """Append the scenario's row to ``$PATTERNS_TEST_FAULT_RESULTS`` (JSON lines) if it is set."""
    path = os.environ.get("PATTERNS_TEST_FAULT_RESULTS")
    if not path:
        return
    row = {
        "scenario": scenario, "load": load, "faults": faults, **asdict(inv),
        "lost": inv.lost, "duplicates": inv.duplicates, "overspend_usd": inv.overspend_usd,
        "rerun": rerun,
    }  # fmt: skip
    with Path(path).open("a") as fh:
        fh.write(json.dumps(row) + "\n")


def wait_until(
    done: Callable[[], bool], timeout_s: float, why: Callable[[], str], poll_s: float = 0.5
) -> None:
    """Poll ``done`` until it is true; fail with ``why()`` after ``timeout_s`` seconds."""
    import pytest

    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            pytest.fail(f"not done after {timeout_s:.0f} s: {why()}")
        time.sleep(poll_s)


@dataclass
class Rig:
    """Named worker processes of one scenario: ``start``, ``kill`` (SIGKILL to the group, as the
    OOM killer or a lost node would), ``stop_all``. Logs go to ``folder/<name>-<n>.log``."""

    env: dict[str, str]
    folder: Path
    preexec: Callable[[], None]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)
    starts: int = 0
    kills: int = 0

    def start(self, name: str, role: str, wait: bool = True) -> None:
        """Start ``patterns worker --role ROLE`` as ``name``; with ``wait``, until it is ready."""
        self.starts += 1
        log = self.folder / f"{name}-{self.starts}.log"
        self.procs[name], self.roles[name], self.logs[name] = (
            start_worker(self.env, log, self.preexec, role), role, log,
        )  # fmt: skip
        if wait:
            self.wait_ready(name)

    def wait_ready(self, name: str, timeout_s: float = 180) -> None:
        """Wait for the worker's ``ready.`` line; fail if it exits first."""
        proc, log = self.procs[name], self.logs[name]
        wait_until(
            lambda: proc.poll() is None and bool(READY.search(log.read_text(errors="replace"))),
            timeout_s,
            lambda: f"{name} not ready (exit {proc.poll()}): {log.read_text()[-3000:]}",
            poll_s=0.2,
        )

    def kill(self, name: str) -> None:
        """SIGKILL ``name``'s whole process group and reap it."""
        proc = self.procs[name]
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        self.kills += 1

    def restart(self, name: str) -> None:
        """Kill ``name`` and start it again under its role."""
        self.kill(name)
        self.start(name, self.roles[name])

    def stop_all(self) -> None:
        """SIGTERM every group (SIGKILL after 60 s)."""
        for proc in self.procs.values():
            stop_group(proc)

    def tail(self) -> str:
        """The end of every current log, for failure messages."""
        return "\n".join(
            f"--- {n}\n{log.read_text(errors='replace')[-1500:]}" for n, log in self.logs.items()
        )


@contextmanager
def sweep_beat(redis_url: str, every_s: float = 3.0) -> Iterator[list[int]]:
    """Celery beat's job for a test: publish the housekeeping sweep every ``every_s`` seconds
    to ``redis_url`` (skipping a beat while the broker is down). Yields ``[sent, failed]``."""
    from kombu import Connection

    counts = [0, 0]
    stop = threading.Event()

    def beat() -> None:
        from pipeline.settings import Settings
        from workers.app import make_celery

        app = make_celery(Settings(redis_url=redis_url))  # type: ignore[call-arg]
        while not stop.wait(every_s):
            try:
                with Connection(redis_url, connect_timeout=1) as conn:
                    app.send_task(
                        TaskName.SWEEP_OUTBOX.value, queue=QUEUE_HOUSEKEEPING, connection=conn,
                        retry=False,
                    )  # fmt: skip
                counts[0] += 1
            except Exception:  # the broker is down: the next beat tries again
                counts[1] += 1

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join(timeout=30)


def worker_env(database_url: str, redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of the scenario's workers: the test database and Redis, short sweeps
    (outbox and embeddings stale after 5 s), then ``extra`` (``PATTERNS_*`` settings, which win)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATTERNS_")}
    env.update(
        DATABASE_URL=database_url, REDIS_URL=redis_url, PATTERNS_DATA_DIR=str(data_dir),
        HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
        PATTERNS_OUTBOX_STALE_AFTER_S="5", PATTERNS_EMBED_STALE_AFTER_S="5",
    )  # fmt: skip
    env.update(extra)
    return env
