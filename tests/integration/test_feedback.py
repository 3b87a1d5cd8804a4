"""Feedback comments against a real HTTP server on loopback that speaks GitHub's wire format for
``POST`` and ``GET /repos/{owner}/{repo}/issues/{number}/comments`` (the listing paginated with
``per_page``/``page`` and a ``Link: rel="next"`` header) and records what it receives; patterns
embedded with the real MiniLM model in the embedded Postgres."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, insert, select, update
from support.loopback import reply_json, serve

from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, Pattern, WebhookDelivery
from pipeline.errors import PermanentError, RetryableError
from pipeline.github.client import HttpxGitHubClient, IssueComment
from pipeline.github.feedback import (
    COMMENT_MARKER,
    feedback_candidates,
    feedback_marker,
    post_feedback,
)
from pipeline.intake.normalize import normalize_delivery, normalize_interaction
from pipeline.intake.store import store
from pipeline.settings import Settings
from pipeline.store.embedder import pattern_text

pytestmark = pytest.mark.integration

OCTOKIT = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "github" / "octokit-payload-examples"
)
TOKEN = "ghs_test_token"

EARLIER = [
    (
        "Retry broker connections with exponential backoff",
        "Reconnect to Redis with growing delays.",
    ),
    ("Pin dependency versions in CI", "Lock files keep builds repeatable."),
    ("Use a connection pool per worker process", "Pools avoid reconnecting for each task."),
]
NEW = [("Back off exponentially when the broker connection drops", "Retry Redis reconnects.")]
#: The closed pull request's pattern: the same idea in other words (one active pattern per
#: normalised title and type is the store's rule).
NEW_LATER = [("Exponential backoff for dropped broker connections", "Retry Redis reconnects.")]


@dataclass
class Recorder:
    """What the fake GitHub received (``requests``: the POSTs; ``listings``: the GETs' paths),
    the statuses it answers with (then 201s for POSTs, 200s for GETs), and the comments of each
    issue (``comments[path]``, oldest first: the POSTs' and any a test puts there)."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    listings: list[str] = field(default_factory=list)
    get_statuses: list[int] = field(default_factory=list)
    comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    url: str = ""


@pytest.fixture()
def github() -> Iterator[Recorder]:
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            recorder.requests.append(
                {"path": self.path, "headers": dict(self.headers), "json": json.loads(body)}
            )
            code = recorder.statuses.pop(0) if recorder.statuses else 201
            payload = (
                {"id": 1000 + len(recorder.requests), "body": json.loads(body)["body"]}
                if code == 201
                else {"message": "nope"}
            )
            if code == 201:
                recorder.comments.setdefault(self.path, []).append(payload)
            reply_json(self, code, payload)

        def do_GET(self) -> None:
            """GitHub's "List issue comments": ``per_page`` (default 30, at most 100) and
            ``page`` (from 1), a ``Link`` header naming the next page while there is one."""
            url = urlsplit(self.path)
            recorder.listings.append(self.path)
            code = recorder.get_statuses.pop(0) if recorder.get_statuses else 200
            if code != 200:
                reply_json(self, code, {"message": "nope"})
                return
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            per_page, page = min(int(query.get("per_page", 30)), 100), int(query.get("page", 1))
            every = recorder.comments.get(url.path, [])
            data = json.dumps(every[(page - 1) * per_page : page * per_page]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if page * per_page < len(every):
                nxt = f"{recorder.url}{url.path}?per_page={per_page}&page={page + 1}"
                self.send_header("Link", f'<{nxt}>; rel="next"')
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    with serve(Handler) as url:
        recorder.url = url
        yield recorder


def _payload(relative: str) -> dict[str, Any]:
    path = OCTOKIT / relative
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared missing?)")
    return json.loads(path.read_text())


def _add_patterns(db: Database, embedder: Any, iid: int, patterns: list[tuple[str, str]]) -> None:
    vectors = embedder.encode([pattern_text(t, {"description": d}) for t, d in patterns])
    with db.session(ALL_PROJECTS) as s:
        project = s.scalar(select(Interaction.project_id).where(Interaction.id == iid))
        for (title, desc), vec in zip(patterns, vectors, strict=True):
            s.execute(
                insert(Pattern).values(
                    project_id=project, type="solution", title=title,
                    content={"description": desc, "evidence": ""}, embedding=vec,
                    source_interaction_id=iid, extraction_key="k",
                )
            )  # fmt: skip
        s.execute(update(Interaction).where(Interaction.id == iid).values(status="extracted"))


@pytest.fixture()
def scene(db: Database, embedder: Any) -> dict[str, int]:
    """An earlier interaction of the project with three patterns, then an opened pull request
    and a closed one, each extracted with a pattern of its own."""
    opened = _payload("pull_request/opened.payload.json")
    closed = _payload("pull_request/closed.payload.json")
    project = opened["repository"]["full_name"]
    with db.session(ALL_PROJECTS) as s:
        chat = {"project": project, "content": "chat", "external_id": "https://x/earlier"}
        earlier = store(s, [normalize_interaction(chat)])
    _add_patterns(db, embedder, earlier.interaction_ids[0], EARLIER)
    ids = {}
    for name, payload in (("opened", opened), ("closed", closed)):
        with db.session(ALL_PROJECTS) as s:
            result = store(s, [normalize_delivery("pull_request", f"d-{name}", payload)])
        ids[name] = result.interaction_ids[0]
        _add_patterns(db, embedder, ids[name], NEW if name == "opened" else NEW_LATER)
    ids["number"] = opened["pull_request"]["number"]
    return ids


def _settings(url: str) -> Settings:
    return Settings(github_token=TOKEN, github_api_url=url, feedback_max_patterns=2)  # type: ignore[call-arg]


def test_one_comment_per_delivery(db: Database, github: Recorder, scene: dict[str, int]) -> None:
    settings = _settings(github.url)
    client = HttpxGitHubClient.from_settings(settings)
    try:
        assert feedback_candidates(db, _pattern_ids(db)) == [scene["opened"]]
        result = post_feedback(
            db=db, client=client, settings=settings,
            interaction_ids=[scene["opened"], scene["closed"]],
        )  # fmt: skip
        again = post_feedback(
            db=db, client=client, settings=settings, interaction_ids=[scene["opened"]]
        )
    finally:
        client.close()
    assert result.posted == {"d-opened": 1001}
    assert result.skipped == {scene["closed"]: "no comment for pull_request.closed"}
    assert again.posted == {} and again.skipped == {scene["opened"]: "comment already posted"}
    (request,) = github.requests
    assert request["path"] == f"/repos/Codertocat/Hello-World/issues/{scene['number']}/comments"
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["authorization"] == f"Bearer {TOKEN}"
    assert headers["accept"] == "application/vnd.github+json"
    assert headers["x-github-api-version"] == "2022-11-28"
    body = request["json"]["body"]
    assert body.startswith(COMMENT_MARKER.format(delivery="d-opened"))
    rows = [line for line in body.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(rows) == 1 + 2  # header and feedback_max_patterns rows
    assert EARLIER[0][0] in rows[1]  # the closest earlier pattern comes first
    assert "[source](https://x/earlier)" in rows[1]
    assert (
        NEW[0][0] not in body
    )  # its own patterns (and the closed PR's, created later) are not listed
    with db.session(ALL_PROJECTS) as s:
        delivery = s.scalars(
            select(WebhookDelivery).where(WebhookDelivery.delivery_id == "d-opened")
        ).one()
        assert delivery.feedback_comment_id == 1001 and delivery.feedback_posted_at is not None
        assert feedback_candidates(db, _pattern_ids(db)) == []


def _pattern_ids(db: Database) -> list[Any]:
    with db.session(ALL_PROJECTS) as s:
        return list(s.scalars(select(Pattern.id)).all())


def test_github_errors_are_mapped_and_nothing_is_recorded(
    db: Database, github: Recorder, scene: dict[str, int]
) -> None:
    settings = _settings(github.url)
    client = HttpxGitHubClient.from_settings(settings)
    github.statuses = [502, 404]
    try:
        with pytest.raises(RetryableError, match="502"):
            post_feedback(
                db=db, client=client, settings=settings, interaction_ids=[scene["opened"]]
            )
        with pytest.raises(PermanentError, match="404"):
            post_feedback(
                db=db, client=client, settings=settings, interaction_ids=[scene["opened"]]
            )
        with db.session(ALL_PROJECTS) as s:
            assert (
                s.scalar(
                    select(func.count()).where(WebhookDelivery.feedback_comment_id.is_not(None))
                )
                == 0
            )
        result = post_feedback(
            db=db, client=client, settings=settings, interaction_ids=[scene["opened"]]
        )
    finally:
        client.close()
    assert list(result.posted) == ["d-opened"]
    assert len(github.requests) == 3


def test_unreachable_github_is_retryable(db: Database, scene: dict[str, int]) -> None:
    settings = _settings("http://127.0.0.1:1")
    client = HttpxGitHubClient.from_settings(settings)
    try:
        with pytest.raises(RetryableError, match="unreachable"):
            post_feedback(
                db=db, client=client, settings=settings, interaction_ids=[scene["opened"]]
            )
    finally:
        client.close()


class _DiesAfterPosting:
    """A client whose process dies right after GitHub accepted the comment, before the
    transaction that records it commits."""

    def __init__(self, inner: HttpxGitHubClient) -> None:
        self.inner = inner

    def issue_comments(self, repo: str, number: int) -> Iterator[IssueComment]:
        return self.inner.issue_comments(repo, number)

    def create_issue_comment(self, repo: str, number: int, body: str) -> int:
        self.inner.create_issue_comment(repo, number, body)
        raise RuntimeError("worker died")


def _recorded(db: Database, delivery_id: str) -> tuple[int | None, bool]:
    with db.session(ALL_PROJECTS) as s:
        row = s.execute(
            select(WebhookDelivery.feedback_comment_id, WebhookDelivery.feedback_posted_at).where(
                WebhookDelivery.delivery_id == delivery_id
            )
        ).one()
    return row[0], row[1] is not None


def test_a_comment_posted_before_a_crash_is_found_not_posted_again(
    db: Database, github: Recorder, scene: dict[str, int]
) -> None:
    """The gap the row lock cannot close: GitHub took the comment, the process died before the
    commit. The retry finds the delivery's marker among the issue's comments (on the second
    page of a long thread) and records that comment instead of posting another."""
    settings = _settings(github.url)
    path = f"/repos/Codertocat/Hello-World/issues/{scene['number']}/comments"
    github.comments[path] = [{"id": i, "body": f"comment {i}"} for i in range(1, 131)]
    github.comments[path][5]["body"] = feedback_marker("d-other") + "\nanother delivery's"
    client = HttpxGitHubClient.from_settings(settings)
    try:
        with pytest.raises(RuntimeError, match="worker died"):
            post_feedback(
                db=db, client=_DiesAfterPosting(client), settings=settings,
                interaction_ids=[scene["opened"]],
            )  # fmt: skip
        assert _recorded(db, "d-opened") == (None, False)
        assert feedback_candidates(db, _pattern_ids(db)) == [scene["opened"]]
        retry = post_feedback(
            db=db, client=client, settings=settings, interaction_ids=[scene["opened"]]
        )
    finally:
        client.close()
    assert len(github.requests) == 1  # one comment, ever
    assert retry.posted == {}
    assert retry.skipped == {scene["opened"]: "comment already on GitHub (1001), recorded"}
    assert _recorded(db, "d-opened") == (1001, True)
    assert feedback_candidates(db, _pattern_ids(db)) == []
    # Each attempt read both pages (100 per page), following the Link header.
    pages = [urlsplit(u).query for u in github.listings]
    assert pages == ["per_page=100", "per_page=100&page=2"] * 2


def test_a_failed_listing_posts_nothing(
    db: Database, github: Recorder, scene: dict[str, int]
) -> None:
    settings = _settings(github.url)
    github.get_statuses = [503, 404]
    client = HttpxGitHubClient.from_settings(settings)
    try:
        with pytest.raises(RetryableError, match="503"):
            post_feedback(
                db=db, client=client, settings=settings, interaction_ids=[scene["opened"]]
            )
        with pytest.raises(PermanentError, match="404"):
            post_feedback(
                db=db, client=client, settings=settings, interaction_ids=[scene["opened"]]
            )
        assert github.requests == [] and _recorded(db, "d-opened") == (None, False)
        result = post_feedback(
            db=db, client=client, settings=settings, interaction_ids=[scene["opened"]]
        )
    finally:
        client.close()
    assert result.posted == {"d-opened": 1001}


def test_the_listing_follows_next_pages_on_the_api_host_only() -> None:
    """A ``Link: rel="next"`` to another host is not followed: the token would go with it."""
    seen: list[str] = []

    class Elsewhere(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            data = json.dumps([{"id": 1, "body": "first page"}]).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Link", '<http://evil.example/steal?page=2>; rel="next"')
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    with serve(Elsewhere) as url:
        client = HttpxGitHubClient(url, TOKEN)
        try:
            assert list(client.issue_comments("o/r", 1)) == [IssueComment(1, "first page")]
        finally:
            client.close()
    assert seen == ["/repos/o/r/issues/1/comments?per_page=100"]


def test_hostile_titles_and_sources_reach_github_escaped(
    db: Database, embedder: Any, github: Recorder
) -> None:
    """A stored pattern's title and its interaction's external id go into the comment as text:
    no HTML, no link to a ``javascript:`` URL, no ``@`` mention."""
    opened = _payload("pull_request/opened.payload.json")
    project = opened["repository"]["full_name"]
    with db.session(ALL_PROJECTS) as s:
        earlier = store(s, [normalize_interaction({"project": project, "content": "chat"})])
        s.execute(
            update(Interaction)
            .where(Interaction.id == earlier.interaction_ids[0])
            .values(external_id="javascript:alert(document.cookie)")
        )
    hostile = "</details><img src=x onerror=alert(1)> ping @octocat [x](javascript:alert(1))"
    _add_patterns(db, embedder, earlier.interaction_ids[0], [(hostile, EARLIER[0][1])])
    with db.session(ALL_PROJECTS) as s:
        new = store(s, [normalize_delivery("pull_request", "d-hostile", opened)])
    _add_patterns(db, embedder, new.interaction_ids[0], NEW)
    settings = _settings(github.url)
    client = HttpxGitHubClient.from_settings(settings)
    try:
        result = post_feedback(
            db=db, client=client, settings=settings, interaction_ids=new.interaction_ids
        )
    finally:
        client.close()
    assert list(result.posted) == ["d-hostile"]
    body = github.requests[0]["json"]["body"]
    assert body.count("<") == 1 and body.count(">") == 1  # the hidden marker's only
    assert "@octocat" not in body and "](javascript" not in body and "javascript:alert" not in body
    assert "&lt;img src\\=x onerror\\=alert\\(1\\)&gt;" in body  # still readable, as text


def test_embed_task_hands_on_to_the_feedback_task(
    db: Database, embedder: Any, github: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The chain as workers run it: the embed task embeds a new pull request's patterns and,
    with a token set, queues ``patterns.post_feedback``, which comments once."""
    from workers import resources
    from workers.app import app

    app.loader.import_default_modules()
    opened = _payload("pull_request/opened.payload.json")
    project = opened["repository"]["full_name"]
    with db.session(ALL_PROJECTS) as s:
        earlier = store(s, [normalize_interaction({"project": project, "content": "chat"})])
    _add_patterns(db, embedder, earlier.interaction_ids[0], EARLIER)
    with db.session(ALL_PROJECTS) as s:
        new = store(s, [normalize_delivery("pull_request", "d-chain", opened)]).interaction_ids[0]
        pattern_ids = [
            s.scalar(
                insert(Pattern)
                .values(project_id=s.scalar(select(Interaction.project_id).where(
                    Interaction.id == new)), type="solution", title=title,
                    content={"description": desc, "evidence": ""}, source_interaction_id=new,
                    extraction_key="k")
                .returning(Pattern.id)
            )
            for title, desc in NEW
        ]  # fmt: skip
        s.execute(update(Interaction).where(Interaction.id == new).values(status="extracted"))
    settings = _settings(github.url)
    eager = app.conf.task_always_eager
    app.conf.task_always_eager = True  # run the handed-on task here (no broker in this test)
    try:
        with resources.use(resources.Resources(settings, db=db, embedder=embedder)):
            out = app.tasks["patterns.embed_patterns"].apply(args=[[str(p) for p in pattern_ids]])
            again = app.tasks["patterns.embed_patterns"].apply(args=[[str(p) for p in pattern_ids]])
    finally:
        app.conf.task_always_eager = eager
    first, second = out.get(), again.get()
    assert (first["embedded"], first["feedback"]) == (1, 1)
    assert (second["embedded"], second["feedback"]) == (0, 0)
    (request,) = github.requests
    assert request["json"]["body"].startswith(COMMENT_MARKER.format(delivery="d-chain"))
    with db.session(ALL_PROJECTS) as s:
        assert (
            s.scalar(
                select(WebhookDelivery.feedback_comment_id).where(
                    WebhookDelivery.delivery_id == "d-chain"
                )
            )
            == 1001
        )
