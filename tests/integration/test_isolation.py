"""Reading the store over HTTP on a real uvicorn, one project per key: search, listing, graph,
the live feed (server-sent events over LISTEN/NOTIFY), and isolation between projects enforced
by Postgres row-level security for the application's role."""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, make_url, select, text
from support.replay_llm import ReplayLLM, edge, pattern

from pipeline.api import create_app
from pipeline.db.engine import ALL_PROJECTS, APP_ROLE, Database
from pipeline.db.models import Pattern, TypeScriptError
from pipeline.errorfix.parsing import TsDiagnostic
from pipeline.errorfix.store import store_diagnostics
from pipeline.extract.batch import extract_batch
from pipeline.intake.apikeys import create_api_key
from pipeline.intake.normalize import NormalizedInteraction
from pipeline.intake.store import store
from pipeline.settings import Settings
from pipeline.store.embed import embed_patterns

pytestmark = pytest.mark.integration

Serve = Callable[[Any], AbstractContextManager[str]]
ADMIN = "admin-token-for-tests"
A, B = "acme/api", "other/secret"
#: Each project's patterns; B has near-copies of A's, so a leak would show in search.
TITLES = {
    A: ["Retry broker connections with exponential backoff", "Test the reconnect path"],
    B: ["Retry broker connections with backoff and jitter", "Rotate the signing secret yearly"],
}


def _populate(db: Database, embedder: Any, settings: Settings) -> dict[str, Any]:
    """Two projects with keys, interactions, patterns (embedded), an edge, and B's TS error."""
    out: dict[str, Any] = {}
    for project, (first, second) in TITLES.items():
        with db.session(ALL_PROJECTS) as s:
            _, out[f"key:{project}"] = create_api_key(s, project, "tests")
            ids = store(s, [
                NormalizedInteraction(project=project, source="api", kind="pull_request",
                                      content=f"{project} PR {i}", idempotency_key=f"{project}{i}")
                for i in range(2)
            ]).interaction_ids  # fmt: skip
        llm = ReplayLLM({
            f"{project} PR 0": {"patterns": [pattern(first)], "relationships": []},
            f"{project} PR 1": {"patterns": [pattern(second, "testing")],
                                "relationships": [edge(second, first)]},
        })  # fmt: skip
        made = extract_batch(db=db, engine=llm, settings=settings, interaction_ids=ids)
        embed_patterns(db=db, embedder=embedder, settings=settings, pattern_ids=made.pattern_ids)
        with db.session(ALL_PROJECTS) as s:
            out[f"id:{project}"] = s.scalar(select(Pattern.project_id).where(
                Pattern.id == made.pattern_ids[0]))  # fmt: skip
            out[f"patterns:{project}"] = {str(p) for p in made.pattern_ids}
    store_diagnostics(db, [TsDiagnostic(B, "a.ts", 1, 1, "TS2322", "Type 'string'...", "x")])
    with db.session(ALL_PROJECTS) as s:
        out["error:B"] = s.scalar(select(TypeScriptError.id))
    return out


@pytest.fixture()
def served(
    db: Database, embedder: Any, live_server: Serve
) -> Iterator[tuple[httpx.Client, dict[str, Any]]]:
    settings = Settings(database_url=None, redis_url=None, admin_token=ADMIN, feed_poll_s=30)  # type: ignore[arg-type]
    world = _populate(db, embedder, settings)
    app = create_app(settings, db=db, embedder=embedder)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        yield client, world


def _auth(world: dict[str, Any], project: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {world[f'key:{project}']}"}


def test_a_key_reads_its_own_project_through_every_route(
    served: tuple[httpx.Client, dict[str, Any]],
) -> None:
    client, world = served
    auth, mine, theirs = _auth(world, A), world[f"id:{A}"], world[f"id:{B}"]
    assert client.get("/v1/projects/me", headers=auth).json() == {"id": str(mine), "name": A}

    # Search: a paraphrase finds the expected pattern, and nothing of B's near-copies.
    paraphrase = {"q": "reconnect to the message broker with growing delays"}
    results = client.get("/v1/patterns/search", headers=auth, params=paraphrase).json()["results"]
    assert results[0]["title"] == TITLES[A][0] and 0 <= results[0]["score"] <= 1
    assert {r["id"] for r in results} <= world[f"patterns:{A}"]
    assert results[0]["sources"][0]["kind"] == "pull_request"
    typed = client.get("/v1/patterns/search", headers=auth,
                       params={"q": "reconnect", "type": "testing"}).json()["results"]  # fmt: skip
    assert [r["title"] for r in typed] == [TITLES[A][1]]

    # Listing, one pattern a page: every active pattern of A once, none of B's.
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/v1/projects/{mine}/patterns", headers=auth, params=params).json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sorted(seen) == sorted(world[f"patterns:{A}"])

    graph = client.get(f"/v1/projects/{mine}/graph", headers=auth).json()
    assert {n["id"] for n in graph["nodes"]} == world[f"patterns:{A}"]
    (only,) = graph["edges"]
    assert only["type"] == "depends_on" and {only["source"], only["target"]} <= {
        n["id"] for n in graph["nodes"]
    }

    # Another project's id is 404 on every project route; B's error cannot be reviewed.
    for path in ("patterns", "graph", "events"):
        assert client.get(f"/v1/projects/{theirs}/{path}", headers=auth).status_code == 404
    assert client.get(f"/v1/projects/{uuid.uuid4()}/graph", headers=auth).status_code == 404
    review = client.post(f"/v1/typescript-errors/{world['error:B']}/accept", headers=auth)
    assert review.status_code == 403
    assert client.get("/v1/costs", headers=auth).status_code == 401  # an operator report
    assert client.get("/v1/costs", headers={"Authorization": f"Bearer {ADMIN}"}).status_code == 200
    assert client.get("/v1/patterns/search", params={"q": "x"}).status_code == 401


def test_the_application_role_without_a_project_sees_no_rows(
    db: Database, embedder: Any, database_url: str
) -> None:
    world = _populate(db, embedder, Settings(database_url=None, redis_url=None))  # type: ignore[call-arg]
    as_app = make_url(database_url).set(username=APP_ROLE, password=None)
    engine = create_engine(as_app)
    tables = ("patterns", "interactions", "pattern_events", "pattern_relationships", "projects")
    try:
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT current_user")) == APP_ROLE
            for table in tables:
                assert conn.scalar(text(f"SELECT count(*) FROM {table}")) == 0, table
            conn.execute(text("SELECT set_config('app.current_project', :p, false)"),
                         {"p": str(world[f"id:{A}"])})  # fmt: skip
            projects = conn.scalars(text("SELECT DISTINCT project_id FROM patterns")).all()
            assert projects == [world[f"id:{A}"]]
            conn.rollback()
        with engine.connect() as conn, pytest.raises(Exception, match="row-level security"):
            sneaky = "INSERT INTO patterns (project_id, type, title) VALUES (:p, 'testing', 'x')"
            conn.execute(text(sneaky), {"p": world[f"id:{B}"]})
    finally:
        engine.dispose()


class _Listener:
    """Reads a server-sent event stream in a thread into ``events`` as ``(id, type, data)``;
    :meth:`close` ends the connection (so the server can stop) and the thread."""

    def __init__(self, base_url: str, path: str, headers: dict[str, str]) -> None:
        self.events: queue.Queue[Any] = queue.Queue()
        self.ready = threading.Event()
        self._client = httpx.Client(base_url=base_url, timeout=httpx.Timeout(30, read=None))
        self._thread = threading.Thread(target=self._run, args=(path, headers), daemon=True)
        self._thread.start()
        assert self.ready.wait(10), "the stream did not start"

    def _run(self, path: str, headers: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", path, headers=headers) as resp:
                self.ready.set()
                current: dict[str, str] = {}
                for line in resp.iter_lines():
                    if not line:
                        if "event" in current:
                            data = json.loads(current["data"])
                            self.events.put((int(current["id"]), current["event"], data))
                        current = {}
                        continue
                    field, _, value = line.partition(":")
                    current[field] = value.strip()
        except (httpx.HTTPError, RuntimeError):  # closed from the test's side
            return

    def next(self, timeout: float) -> Any:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        self._client.close()
        self._thread.join(timeout=10)


def test_the_live_feed_delivers_within_a_second_and_resumes_after_an_id(
    served: tuple[httpx.Client, dict[str, Any]],
) -> None:
    client, world = served
    auth, mine = _auth(world, A), world[f"id:{A}"]
    base, path = str(client.base_url), f"/v1/projects/{mine}/events"
    live = _Listener(base, path, auth)
    try:
        time.sleep(0.3)  # the stream has read where it starts
        posted = time.monotonic()
        first = client.post("/v1/interactions", headers=auth, json={"content": "first live one"})
        assert first.status_code == 202
        event_id, kind, data = live.next(timeout=5)
        assert time.monotonic() - posted < 1.0, "interaction.received took over a second"
        assert kind == "interaction.received"
        assert data["payload"]["interaction_id"] == first.json()["id"]
        # B's activity never reaches A's stream.
        client.post("/v1/interactions", headers=_auth(world, B), json={"content": "B's news"})
        second = client.post("/v1/interactions", headers=auth, json={"content": "second one"})
        next_id, _, data = live.next(timeout=5)
        assert data["payload"]["interaction_id"] == second.json()["id"] and next_id > event_id
    finally:
        live.close()
    # Resume after the first event: the second comes again, then what happened meanwhile.
    third = client.post("/v1/interactions", headers=auth, json={"content": "third, offline"})
    resumed = _Listener(base, path, {**auth, "Last-Event-ID": str(event_id)})
    try:
        got = [resumed.next(timeout=5)[2]["payload"]["interaction_id"] for _ in range(2)]
        assert got == [second.json()["id"], third.json()["id"]]
        time.sleep(0.5)
        assert resumed.events.empty()
    finally:
        resumed.close()
