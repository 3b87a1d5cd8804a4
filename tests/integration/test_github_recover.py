"""Missed-delivery recovery against a real HTTP server on loopback that speaks GitHub's
"List deliveries for a ... webhook" (``per_page``/``cursor``, newest first, ``Link: rel="next"``)
and "Redeliver a delivery" (``POST .../deliveries/{id}/attempts``, 202) for repository,
organisation and app hooks, with our stored deliveries in the embedded Postgres."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import insert
from support.loopback import reply_json, serve
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import WebhookDelivery
from pipeline.github.client import HttpxGitHubClient
from pipeline.github.recover import parse_since, recover
from pipeline.settings import Settings, get_settings
from pipeline.settings_github import HookRef

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("restore_logging")]

TOKEN = "ghs_recover_token"
REPO = HookRef("repo", "acme/api", 7)
ORG = HookRef("org", "acme", 9)
NOW = dt.datetime.now(dt.UTC)


def _item(id_: int, guid: str, minutes_ago: float, status_code: int) -> dict[str, Any]:
    when = NOW - dt.timedelta(minutes=minutes_ago)
    return {
        "id": id_, "guid": guid, "delivered_at": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "redelivery": id_ >= 100, "duration": 0.1, "status_code": status_code,
        "status": "OK" if status_code < 300 else "Invalid HTTP Response: 502",
        "event": "pull_request", "action": "opened", "installation_id": None,
        "repository_id": 1,
    }  # fmt: skip


@dataclass
class FakeGitHub:
    """Deliveries per listing path (newest first), served ``page_size`` a page; what was asked
    (``gets``: paths with queries, ``posts``: paths), answers to force (``get_answers`` /
    ``post_answers``: (status, headers) in order, then 200/202), and ``foreign_next``: listing
    paths whose next link names another host (``localhost`` instead of ``127.0.0.1``)."""

    hooks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    page_size: int = 2
    gets: list[str] = field(default_factory=list)
    posts: list[str] = field(default_factory=list)
    auth: set[str] = field(default_factory=set)
    get_answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    post_answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    foreign_next: set[str] = field(default_factory=set)
    url: str = ""


def _refuse(handler: BaseHTTPRequestHandler, status: int, headers: dict[str, str]) -> None:
    data = b'{"message": "API rate limit exceeded"}'
    handler.send_response(status)
    for name, value in {**headers, "Content-Length": str(len(data))}.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)


@pytest.fixture()
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            fake.gets.append(self.path)
            fake.auth.add(self.headers.get("Authorization", ""))
            if fake.get_answers:
                _refuse(self, *fake.get_answers.pop(0))
                return
            if url.path not in fake.hooks:
                reply_json(self, 404, {"message": "Not Found"})
                return
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            size = min(int(query.get("per_page", 30)), 100, fake.page_size)
            start = int(query.get("cursor", 0))
            every = fake.hooks[url.path]
            data = json.dumps(every[start : start + size]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if start + size < len(every):
                host = fake.url.replace("127.0.0.1", "localhost")
                base = host if url.path in fake.foreign_next else fake.url
                nxt = f"{base}{url.path}?per_page={size}&cursor={start + size}"
                self.send_header("Link", f'<{nxt}>; rel="next"')
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            fake.posts.append(self.path)
            if fake.post_answers:
                _refuse(self, *fake.post_answers.pop(0))
                return
            # GitHub accepts, and (here) the redelivery gets through at once.
            listing, _, rest = self.path.rpartition("/deliveries/")
            attempts = fake.hooks.get(listing + "/deliveries", [])
            old = next((d for d in attempts if str(d["id"]) == rest.split("/")[0]), None)
            if old is None:
                reply_json(self, 404, {"message": "Not Found"})
                return
            attempts.insert(0, _item(100 + len(fake.posts), old["guid"], 0, 200))
            reply_json(self, 202, {})

        def log_message(self, *args: Any) -> None:
            pass

    with serve(Handler) as url:
        fake.url = url
        yield fake


def _scenario(github: FakeGitHub) -> None:
    """Repo hook (3 pages of 2): ``ok-later`` failed then got through, ``lost`` failed twice
    (redeliver its latest attempt, 20), ``stored`` failed but is ours, ``fine``, and ``ancient``
    outside the 3-day window. Org hook: ``org-lost`` on page 1, ``foreign`` behind a next link to
    another host."""
    github.hooks[REPO.deliveries_path] = [
        _item(21, "ok-later", 10, 200),
        _item(20, "lost", 20, 500),
        _item(12, "ok-later", 30, 502),
        _item(11, "stored", 40, 500),
        _item(10, "lost", 50, 0),
        _item(9, "fine", 60, 200),
        _item(1, "ancient", 5 * 24 * 60, 500),
    ]
    github.hooks[ORG.deliveries_path] = [
        _item(31, "org-lost", 5, 502),
        _item(30, "org-fine", 6, 204),
        _item(29, "foreign", 7, 500),
    ]
    github.foreign_next.add(ORG.deliveries_path)


def _store_guid(db: Database, guid: str) -> None:
    with db.session(ALL_PROJECTS) as session:
        session.execute(
            insert(WebhookDelivery).values(
                delivery_id=guid, event="pull_request", outcome="skipped", skip_reason="test"
            )
        )


def _client(github: FakeGitHub) -> HttpxGitHubClient:
    return HttpxGitHubClient(github.url, TOKEN, timeout_s=5)


def test_recover_redelivers_each_failed_unstored_event_once(
    db: Database, github: FakeGitHub
) -> None:
    _scenario(github)
    _store_guid(db, "stored")
    client = _client(github)
    summary = recover(db=db, client=client, hooks=[REPO, ORG], since=parse_since("3d"))
    client.close()
    assert sorted(github.posts) == [
        "/orgs/acme/hooks/9/deliveries/31/attempts",
        "/repos/acme/api/hooks/7/deliveries/20/attempts",
    ]
    assert summary.ok and summary.hooks == 2 and summary.listed == 6 + 2
    assert (summary.failed, summary.already_stored) == (3, 1)  # lost, stored, org-lost
    assert summary.to_redeliver == summary.redelivery_requested == 2 and summary.errors == 0
    # Paginated by cursor, 3 pages for the repo (the last one is past the window); the org's next
    # page lives on another host and is never asked for (here: the same server as `localhost`).
    repo_gets = [g for g in github.gets if g.startswith("/repos/")]
    assert len(repo_gets) == 4 and "cursor=6" in repo_gets[-1]
    assert [g for g in github.gets if g.startswith("/orgs/")] == [
        "/orgs/acme/hooks/9/deliveries?per_page=100"
    ]
    assert github.auth == {f"Bearer {TOKEN}"}
    # The redeliveries got through: a second run has nothing to do.
    again = recover(db=db, client=_client(github), hooks=[REPO, ORG], since=parse_since("3d"))
    assert again.to_redeliver == 0 and len(github.posts) == 2 and again.failed == 1


def test_dry_run_posts_nothing(db: Database, github: FakeGitHub) -> None:
    _scenario(github)
    summary = recover(
        db=db, client=_client(github), hooks=[REPO, ORG], since=parse_since("3d"), dry_run=True
    )
    assert github.posts == [] and summary.dry_run
    assert summary.to_redeliver == 3 and summary.redelivery_requested == 0  # stored is not ours


def test_a_rate_limit_stops_the_run(db: Database, github: FakeGitHub) -> None:
    _scenario(github)
    github.post_answers.append((403, {"retry-after": "60"}))  # secondary rate limit
    summary = recover(db=db, client=_client(github), hooks=[REPO, ORG], since=parse_since("3d"))
    assert len(github.posts) == 1 and not any(g.startswith("/orgs/") for g in github.gets)
    assert summary.rate_limited and summary.retry_after_s == 60 and not summary.ok
    assert summary.redelivery_requested == 0 and "rate limit" in summary.messages[0]
    # Primary limit on the listing: x-ratelimit-remaining 0, reset in ~120 s.
    reset = str(int(dt.datetime.now(dt.UTC).timestamp()) + 120)
    github.get_answers.append((403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": reset}))
    listing = recover(db=db, client=_client(github), hooks=[ORG, REPO], since=parse_since("1h"))
    assert listing.rate_limited and listing.hooks == 1 and listing.listed == 0
    assert listing.retry_after_s is not None and 100 < listing.retry_after_s <= 121


def test_an_unknown_hook_is_an_error_and_the_run_goes_on(db: Database, github: FakeGitHub) -> None:
    _scenario(github)
    gone = HookRef("repo", "acme/gone", 1)
    summary = recover(db=db, client=_client(github), hooks=[gone, REPO], since=parse_since("3d"))
    assert summary.errors == 1 and "acme/gone" in summary.messages[0] and not summary.ok
    assert sorted(github.posts) == [  # "stored" is not stored in this test
        "/repos/acme/api/hooks/7/deliveries/11/attempts",
        "/repos/acme/api/hooks/7/deliveries/20/attempts",
    ]


def _cli(args: list[str], env: dict[str, str]) -> Any:
    get_settings.cache_clear()  # the command reads the environment set here
    try:
        return CliRunner().invoke(app, args, env={**env, "COLUMNS": "200"})
    finally:
        get_settings.cache_clear()


def test_cli_recover_end_to_end(db: Database, database_url: str, github: FakeGitHub) -> None:
    _scenario(github)
    github.hooks["/app/hook/deliveries"] = [_item(41, "app-lost", 3, 500)]
    _store_guid(db, "stored")
    env = {
        "DATABASE_URL": database_url, "PATTERNS_GITHUB_TOKEN": TOKEN,
        "PATTERNS_GITHUB_API_URL": github.url,
        "PATTERNS_GITHUB_HOOKS": "repo:acme/api:7,org:acme:9,app",
    }  # fmt: skip
    dry = _cli(["github", "recover", "--dry-run", "--json", "--since", "2d"], env)
    assert dry.exit_code == 0, dry.output
    report = json.loads(dry.stdout.strip().splitlines()[-1])
    assert report["to_redeliver"] == 3 and report["redelivery_requested"] == 0
    assert github.posts == []
    done = _cli(["github", "recover"], env)
    assert done.exit_code == 0, done.output
    assert "redelivery requested 3" in done.stdout and "already stored 1" in done.stdout
    assert "/app/hook/deliveries/41/attempts" in github.posts and len(github.posts) == 3
    bad = _cli(["github", "recover", "--since", "soon"], env)
    assert bad.exit_code == 2 and "duration" in bad.output
    unset = _cli(["github", "recover"], {**env, "PATTERNS_GITHUB_HOOKS": ""})
    assert unset.exit_code == 2 and "PATTERNS_GITHUB_HOOKS" in unset.output


def test_beat_task_runs_a_recovery(db: Database, github: FakeGitHub) -> None:
    from workers import resources
    from workers.recover import github_recover_task

    _scenario(github)
    _store_guid(db, "stored")
    settings = Settings(  # type: ignore[call-arg]
        github_token=TOKEN, github_api_url=github.url, github_hooks="repo:acme/api:7"
    )
    with resources.use(resources.Resources(settings, db=db)):
        summary = github_recover_task()
    assert summary["redelivery_requested"] == 1 and summary["rate_limited"] is False
    with resources.use(resources.Resources(Settings(), db=db)):
        assert "skipped" in github_recover_task()
