"""``patterns search`` and ``patterns apikey list|revoke`` through the CLI, on the real Postgres
and the real embedder."""

from __future__ import annotations

import json
from typing import Any

import pytest
from support.replay_llm import ReplayLLM, pattern
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.extract.batch import extract_batch
from pipeline.intake.apikeys import authenticate, create_api_key
from pipeline.intake.normalize import NormalizedInteraction
from pipeline.intake.store import store
from pipeline.settings import Settings, get_settings
from pipeline.store.embed import embed_patterns

#: The commands configure logging onto CliRunner's stderr, which closes after each call.
pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("restore_logging")]


def _cli(args: list[str], database_url: str) -> Any:
    get_settings.cache_clear()  # the command reads the environment set here
    try:
        return CliRunner().invoke(app, args, env={"DATABASE_URL": database_url, "COLUMNS": "200"})
    finally:
        get_settings.cache_clear()


def test_search_finds_a_paraphrase_per_project(
    db: Database, embedder: Any, database_url: str
) -> None:
    settings = Settings(database_url=None, redis_url=None)  # type: ignore[call-arg]
    titles = {"acme/api": "Retry broker connections with exponential backoff",
              "other/app": "Retry broker connections with jitter"}  # fmt: skip
    for project, title in titles.items():
        with db.session(ALL_PROJECTS) as s:
            ids = store(s, [NormalizedInteraction(
                project=project, source="api", kind="pull_request", content=f"{project} PR",
                idempotency_key=project)]).interaction_ids  # fmt: skip
        llm = ReplayLLM({f"{project} PR": {"patterns": [pattern(title)], "relationships": []}})
        made = extract_batch(db=db, engine=llm, settings=settings, interaction_ids=ids)
        embed_patterns(db=db, embedder=embedder, settings=settings, pattern_ids=made.pattern_ids)
    query = "reconnect to the broker after it goes away, waiting longer each time"
    mine = _cli(["search", query, "--project", "acme/api", "--json"], database_url)
    assert mine.exit_code == 0, mine.output
    (hit,) = json.loads(mine.stdout.strip().splitlines()[-1])["results"]
    assert hit["title"] == titles["acme/api"] and hit["project"] == "acme/api"
    assert hit["usage_count"] == 1 and hit["sources"][0]["kind"] == "pull_request"
    every = json.loads(_cli(["search", query, "-k", "5", "--json"], database_url).stdout)
    assert {r["project"] for r in every["results"]} == set(titles)
    missing = _cli(["search", query, "--project", "nobody/here"], database_url)
    assert missing.exit_code == 1 and "no project" in missing.output


def test_apikey_list_and_revoke(db: Database, database_url: str) -> None:
    with db.session(ALL_PROJECTS) as s:
        key_id, key = create_api_key(s, "acme/api", "ci")
        create_api_key(s, "other/app", "ci")
    listed = _cli(["apikey", "list", "--project", "acme/api", "--json"], database_url)
    assert listed.exit_code == 0, listed.output
    (row,) = json.loads(listed.stdout)
    assert row["id"] == key_id and key.startswith(row["prefix"]) and row["revoked_at"] is None
    assert key not in listed.stdout  # never the key itself
    assert _cli(["apikey", "revoke", str(key_id)], database_url).exit_code == 0
    with db.session(ALL_PROJECTS) as s:
        assert authenticate(s, key) is None
    again = _cli(["apikey", "revoke", str(key_id)], database_url)
    assert again.exit_code == 1 and "no active key" in again.output
    assert len(json.loads(_cli(["apikey", "list", "--json"], database_url).stdout)) == 2
