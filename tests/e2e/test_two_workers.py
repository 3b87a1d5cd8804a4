"""Two real extract workers under webhook-style traffic (one task per interaction, published
while they run): each task claims its batch under a lease and tops it up from the queue, so the
model sees batches, not single prompts, and every interaction is sent to the model and written
exactly once.

The workers use the OpenAI-compatible engine (``PATTERNS_LOCAL_ENGINE=openai``) against a
loopback chat-completions server, so two of them fit this machine beside each other; the engine
is not what is tested here, the claiming across processes is.
"""

from __future__ import annotations

import json
import os
import re
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import func, select
from support.chat_server import Answer, chat_server
from support.processes import start_worker, stop_group
from support.replay_llm import pattern

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, LLMCall, Pattern
from pipeline.intake.normalize import NormalizedInteraction
from pipeline.intake.outbox import publish_pending
from pipeline.intake.store import store
from pipeline.settings import Settings
from workers.app import make_celery
from workers.dispatch import CeleryDispatcher

pytestmark = pytest.mark.e2e

PATTERNS = Path(sys.executable).with_name("patterns")
N = 40
BATCH = 8
READY = re.compile(r"ready\.")
MARKER = re.compile(r"marker-(\d+)-end")


def _script(prompt: str, _n: int) -> Answer:
    found = MARKER.search(prompt)
    if not found:  # not an extraction of ours (e.g. an analysis prompt): a valid-looking no
        return (400, "not expected here", "")
    body = {"patterns": [pattern(f"Broker lesson number {found.group(1)}")], "relationships": []}
    return (200, json.dumps(body), "stop")


def _statuses(db: Database, ids: list[int]) -> list[str]:
    with db.session(ALL_PROJECTS) as s:
        return list(s.scalars(select(Interaction.status).where(Interaction.id.in_(ids))).all())


def test_two_workers_batch_webhook_traffic_and_extract_each_interaction_once(
    database_url: str, db: Database, redis_url: str, data_dir: Path, tmp_path: Path,
    die_with_parent: Callable[[], None],
) -> None:  # fmt: skip
    records = [
        NormalizedInteraction(
            project="acme/widgets", source="api", kind="conversation", idempotency_key=f"t-{i}",
            content=f"Retry the broker connection (change marker-{i}-end)",
        )
        for i in range(N)
    ]  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        ids = store(s, records).interaction_ids
    dispatcher = CeleryDispatcher(make_celery(Settings(redis_url=redis_url)))  # type: ignore[call-arg]
    with chat_server(_script, delay_s=0.4) as (url, seen):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PATTERNS_")}
        env.update(
            DATABASE_URL=database_url, REDIS_URL=redis_url, PATTERNS_DATA_DIR=str(data_dir),
            PATTERNS_LOCAL_ENGINE="openai", PATTERNS_OPENAI_BASE_URL=url,
            PATTERNS_OPENAI_MODEL="smol", PATTERNS_OPENAI_MAX_RETRIES="0",
            PATTERNS_EXTRACT_BATCH_SIZE=str(BATCH), PATTERNS_EXTRACT_LINGER_S="0.5",
        )  # fmt: skip
        logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
        workers = [start_worker(env, log, die_with_parent) for log in logs]
        try:
            deadline = time.monotonic() + 120
            while not all(READY.search(log.read_text(errors="replace")) for log in logs):
                if any(w.poll() is not None for w in workers) or time.monotonic() > deadline:
                    pytest.fail("workers did not start: " + logs[0].read_text()[-2000:])
                time.sleep(0.1)

            def deliveries() -> None:  # one task per interaction, as webhooks publish them
                for iid in ids:
                    publish_pending(db, dispatcher, [iid], 1, check=False)
                    time.sleep(0.05)

            sender = threading.Thread(target=deliveries)
            sender.start()
            sender.join()
            deadline = time.monotonic() + 180
            while not all(s == "extracted" for s in _statuses(db, ids)):
                if time.monotonic() > deadline:
                    pytest.fail(f"not all extracted: {_statuses(db, ids)}")
                time.sleep(0.2)
        finally:
            for w in workers:
                stop_group(w)
    ours = {p: n for p, n in seen.seen.items() if MARKER.search(p)}
    assert len(ours) == N and set(ours.values()) == {1}  # each prompt reached the model once
    with db.session(ALL_PROJECTS) as s:
        calls = s.execute(select(LLMCall.interaction_id, LLMCall.batch_id)).all()
        duplicates = s.execute(
            select(Pattern.source_interaction_id, func.count())
            .group_by(Pattern.source_interaction_id)
            .having(func.count() > 1)
        ).all()
        leased = s.scalar(select(func.count()).where(Interaction.lease_owner.is_not(None)))
    assert sorted(i for i, _ in calls) == sorted(ids)  # one recorded call each
    batches = {b for _, b in calls}
    assert len(batches) <= N // 2, f"{len(batches)} model calls for {N} interactions"
    assert duplicates == [] and leased == 0
    took = [log.read_text(errors="replace") for log in logs]
    assert sum("extract_batch_topped_up" in text for text in took) >= 1
