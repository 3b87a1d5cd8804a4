"""People's verdicts against a real HTTP server on loopback that speaks GitHub's "Create an issue
comment", "List issue comments" (``per_page``/``page``/``since``, ``Link: rel="next"``) and
"List reactions for an issue comment" (the same paging), with the real embedded Postgres and the
real MiniLM embedder: our feedback comment is posted by :func:`post_feedback`, people react and
reply on the fake, and :func:`poll_verdicts` turns that into validations and contradictions."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, insert, select, text, update
from support.loopback import reply_json, serve
from typer.testing import CliRunner

from pipeline.cli import app as cli_app
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import (
    FeedbackComment,
    FeedbackVerdict,
    Interaction,
    Pattern,
    PatternEvent,
    PatternValidation,
)
from pipeline.github.client import HttpxGitHubClient
from pipeline.github.feedback import post_feedback
from pipeline.github.verdict_poll import POLL_LOCK_KEY, poll_verdicts
from pipeline.github.verdicts import PollSummary
from pipeline.intake.normalize import normalize_delivery, normalize_interaction
from pipeline.intake.store import store
from pipeline.settings import Settings, get_settings
from pipeline.store.embedder import pattern_text

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("restore_logging")]

OCTOKIT = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "github" / "octokit-payload-examples"
)
TOKEN = "ghs_verdicts_token"
EARLIER = [
    ("Retry broker connections with exponential backoff", "Reconnect to Redis with delays."),
    ("Use a connection pool per worker process", "Pools avoid reconnecting for each task."),
    ("Pin dependency versions in CI", "Lock files keep builds repeatable."),
]
NEW = [("Back off exponentially when the broker connection drops", "Retry Redis reconnects.")]


def _stamp(when: dt.datetime) -> str:
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class FakeGitHub:
    """Issue comments per listing path (oldest first) and reactions per comment id, served
    ``page_size`` a page; ``gets`` the GET paths with queries; ``answers``: (status, headers) to
    force on the next GETs."""

    comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    reactions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    gets: list[str] = field(default_factory=list)
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    page_size: int = 2
    url: str = ""
    next_id: int = 1000

    def new_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def react(self, comment_id: int, content: str, login: str, kind: str = "User") -> int:
        rid = self.new_id()
        user = {"login": login, "type": kind}
        self.reactions.setdefault(comment_id, []).append(
            {"id": rid, "content": content, "user": user}
        )
        return rid

    def unreact(self, comment_id: int, login: str) -> None:
        kept = [r for r in self.reactions[comment_id] if r["user"]["login"] != login]
        self.reactions[comment_id] = kept

    def reply(self, path: str, body: str, login: str, minutes: float = 1) -> int:
        cid = self.new_id()
        when = _stamp(dt.datetime.now(dt.UTC) + dt.timedelta(minutes=minutes))
        self.comments.setdefault(path, []).append(
            {"id": cid, "body": body, "user": {"login": login, "type": "User"},
             "created_at": when, "updated_at": when}
        )  # fmt: skip
        return cid


def _page(handler: BaseHTTPRequestHandler, fake: FakeGitHub, every: list[dict[str, Any]]) -> None:
    url = urlsplit(handler.path)
    query = {k: v[-1] for k, v in parse_qs(url.query).items()}
    size = min(int(query.get("per_page", 30)), 100, fake.page_size)
    page = int(query.get("page", 1))
    data = json.dumps(every[(page - 1) * size : page * size]).encode()
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    if page * size < len(every):
        handler.send_header(
            "Link", f'<{fake.url}{url.path}?per_page={size}&page={page + 1}>; rel="next"'
        )
    handler.end_headers()
    handler.wfile.write(data)


@pytest.fixture()
def github() -> Iterator[FakeGitHub]:
    fake = FakeGitHub()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            cid = fake.new_id()
            when = _stamp(dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5))
            fake.comments.setdefault(self.path, []).append(
                {"id": cid, "body": body["body"], "user": {"login": "pp[bot]", "type": "Bot"},
                 "created_at": when, "updated_at": when}
            )  # fmt: skip
            reply_json(self, 201, {"id": cid})

        def do_GET(self) -> None:
            fake.gets.append(self.path)
            if fake.answers:
                status, headers = fake.answers.pop(0)
                data = b'{"message": "nope"}'
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(data))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
                return
            url = urlsplit(self.path)
            query = {k: v[-1] for k, v in parse_qs(url.query).items()}
            if url.path.endswith("/reactions"):
                cid = int(url.path.split("/")[-2])
                _page(self, fake, fake.reactions.get(cid, []))
                return
            since = query.get("since", "")
            every = [c for c in fake.comments.get(url.path, []) if c["updated_at"] >= since]
            _page(self, fake, every)

        def log_message(self, *args: Any) -> None:
            pass

    with serve(Handler) as url:
        fake.url = url
        yield fake


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


@dataclass
class Scene:
    """Our posted comment (``comment_id`` on ``path``) and the titles → ids it listed."""

    settings: Settings
    comment_id: int
    path: str
    listed: dict[str, Any]


@pytest.fixture()
def scene(db: Database, embedder: Any, github: FakeGitHub) -> Scene:
    """Earlier patterns, an opened pull request with a pattern of its own, and the feedback
    comment post_feedback put on it (listing the 2 closest earlier patterns)."""
    path_ = OCTOKIT / "pull_request/opened.payload.json"
    if not path_.is_file():
        pytest.skip(f"{path_} not found (../shared missing?)")
    opened = json.loads(path_.read_text())
    project = opened["repository"]["full_name"]
    with db.session(ALL_PROJECTS) as s:
        chat = {"project": project, "content": "chat", "external_id": "https://x/earlier"}
        earlier = store(s, [normalize_interaction(chat)]).interaction_ids[0]
    _add_patterns(db, embedder, earlier, EARLIER)
    with db.session(ALL_PROJECTS) as s:
        iid = store(s, [normalize_delivery("pull_request", "d-open", opened)]).interaction_ids[0]
    _add_patterns(db, embedder, iid, NEW)
    settings = Settings(  # type: ignore[call-arg]
        github_token=TOKEN, github_api_url=github.url, feedback_max_patterns=2
    )
    client = HttpxGitHubClient.from_settings(settings)
    try:
        posted = post_feedback(db=db, client=client, settings=settings, interaction_ids=[iid])
    finally:
        client.close()
    (comment_id,) = posted.posted.values()
    path = f"/repos/{project}/issues/{opened['pull_request']['number']}/comments"
    with db.session(ALL_PROJECTS) as s:
        row = s.get(FeedbackComment, comment_id)
        assert row is not None and row.repo == project and len(row.pattern_ids) == 2
        titles = dict(s.execute(select(Pattern.title, Pattern.id)).all())
    listed = {t: titles[t] for t in titles if str(titles[t]) in row.pattern_ids}
    assert EARLIER[0][0] in listed  # the closest earlier pattern is listed
    return Scene(settings, comment_id, path, listed)


def _poll(db: Database, settings: Settings) -> PollSummary:
    client = HttpxGitHubClient.from_settings(settings)
    try:
        return poll_verdicts(db, client, settings)
    finally:
        client.close()


def _standing(db: Database, listed: dict[str, Any]) -> dict[str, tuple[int, int, str]]:
    with db.session(ALL_PROJECTS) as s:
        rows = s.execute(
            select(Pattern.title, Pattern.validation_count, Pattern.contradiction_count,
                   Pattern.validation_status).where(Pattern.id.in_(list(listed.values())))
        ).all()  # fmt: skip
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


def _counts(db: Database) -> tuple[int, int]:
    with db.session(ALL_PROJECTS) as s:
        reviews = s.scalar(
            select(func.count()).select_from(PatternValidation)
            .where(PatternValidation.validation_type == "review")
        )  # fmt: skip
        ledger = s.scalar(select(func.count()).select_from(FeedbackVerdict))
    return int(reviews or 0), int(ledger or 0)


def test_reactions_and_replies_become_verdicts_once(
    db: Database, github: FakeGitHub, scene: Scene
) -> None:
    first_title = EARLIER[0][0]
    other = next(t for t in scene.listed if t != first_title)
    github.react(scene.comment_id, "+1", "ann")
    github.react(scene.comment_id, "-1", "bob")
    github.react(scene.comment_id, "+1", "ci", kind="Bot")
    github.react(scene.comment_id, "eyes", "dan")
    github.reply(scene.path, f"> {first_title}\n\nThis is wrong for brokers.", "carl")
    github.reply(scene.path, "Thanks, looks useful", "erin")  # quotes nothing

    summary = _poll(db, scene.settings)
    assert (summary.threads, summary.comments, summary.errors) == (1, 1, 0)
    assert (summary.added, summary.changed, summary.withdrawn) == (5, 0, 0)
    assert any("/reactions" in g and "page=2" in g for g in github.gets)  # paged
    assert any("since=" in g for g in github.gets)
    # first: ann +1, bob -1, carl -1 → 1 confirmation, 2 contradictions: 2/4 ≥ 0.5
    assert _standing(db, scene.listed) == {
        first_title: (1, 2, "contradicted"), other: (1, 1, "pending"),
    }  # fmt: skip
    with db.session(ALL_PROJECTS) as s:
        carl = s.scalars(
            select(PatternValidation).where(PatternValidation.validator == "github:carl")
        ).one()
        events = s.scalars(select(PatternEvent.event_type)).all()
    assert carl.result == "contradicted" and carl.evidence["source"] == "reply"
    assert "brokers" in carl.evidence["excerpt"] and carl.pattern_id == scene.listed[first_title]
    assert "pattern.contradicted" in events

    again = _poll(db, scene.settings)
    assert (again.added, again.changed, again.withdrawn) == (0, 0, 0)
    assert _counts(db) == (5, 5)

    github.unreact(scene.comment_id, "bob")
    github.react(scene.comment_id, "+1", "bob")  # bob changes his mind
    github.unreact(scene.comment_id, "ann")  # ann withdraws
    changed = _poll(db, scene.settings)
    assert (changed.added, changed.changed, changed.withdrawn) == (0, 2, 2)
    assert _counts(db) == (3, 3)
    assert _standing(db, scene.listed) == {
        first_title: (1, 1, "pending"), other: (1, 0, "pending"),  # 1/3 < 0.5: no longer
    }  # fmt: skip


def test_a_poll_that_dies_mid_thread_leaves_nothing_and_the_next_one_does_it_all(
    db: Database, github: FakeGitHub, scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pipeline.github.verdict_poll as poll_module

    github.react(scene.comment_id, "+1", "ann")
    github.react(scene.comment_id, "+1", "bob")
    calls = {"n": 0}
    real_refresh = poll_module.refresh

    def dying_refresh(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("worker killed")
        return real_refresh(*args, **kwargs)

    monkeypatch.setattr(poll_module, "refresh", dying_refresh)
    with pytest.raises(RuntimeError):
        _poll(db, scene.settings)
    assert _counts(db) == (0, 0)
    with db.session(ALL_PROJECTS) as s:
        assert s.get(FeedbackComment, scene.comment_id).polled_at is None  # type: ignore[union-attr]
    monkeypatch.setattr(poll_module, "refresh", real_refresh)
    done = _poll(db, scene.settings)
    assert done.added == 4 and _counts(db) == (4, 4)
    assert {v[0] for v in _standing(db, scene.listed).values()} == {2}
    assert {v[2] for v in _standing(db, scene.listed).values()} == {"validated"}


def test_refusals_rate_limits_and_a_concurrent_poll(
    db: Database, github: FakeGitHub, scene: Scene
) -> None:
    github.react(scene.comment_id, "+1", "ann")
    github.answers.append((500, {}))
    failed = _poll(db, scene.settings)
    assert failed.errors == 1 and failed.added == 0 and "500" in failed.messages[0]
    github.answers.append((403, {"x-ratelimit-remaining": "0", "retry-after": "60"}))
    limited = _poll(db, scene.settings)
    assert limited.rate_limited and limited.retry_after_s == 60 and limited.added == 0
    with db.engine.connect() as other:
        assert other.scalar(text("SELECT pg_try_advisory_lock(:k)"), {"k": POLL_LOCK_KEY})
        assert _poll(db, scene.settings).locked_out
        other.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": POLL_LOCK_KEY})
        other.commit()
    assert _poll(db, scene.settings).added == 2


def test_beat_task_and_cli(
    db: Database, database_url: str, github: FakeGitHub, scene: Scene
) -> None:
    from workers import resources
    from workers.verdicts import github_verdicts_task

    github.react(scene.comment_id, "-1", "ann")
    with resources.use(resources.Resources(scene.settings, db=db)):
        summary = github_verdicts_task()
    assert summary["added"] == 2 and summary["errors"] == 0
    with resources.use(resources.Resources(Settings(), db=db)):
        assert "skipped" in github_verdicts_task()
    github.react(scene.comment_id, "+1", "bob")
    env = {"DATABASE_URL": database_url, "PATTERNS_GITHUB_TOKEN": TOKEN,
           "PATTERNS_GITHUB_API_URL": github.url}  # fmt: skip
    result = _cli(["github", "verdicts", "--json"], env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["added"] == 2
    text_out = _cli(["github", "verdicts"], env)
    assert text_out.exit_code == 0 and "added 0" in text_out.stdout
    assert _cli(["github", "verdicts"], {**env, "PATTERNS_GITHUB_TOKEN": ""}).exit_code == 2


def _cli(args: list[str], env: dict[str, str]) -> Any:
    get_settings.cache_clear()  # the command reads the environment set here
    try:
        return CliRunner().invoke(cli_app, args, env={**env, "COLUMNS": "200"})
    finally:
        get_settings.cache_clear()


def test_the_migration_fills_in_comments_posted_before_it(
    db: Database, database_url: str, scene: Scene
) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from pipeline.db.engine import MIGRATIONS_DIR

    db.dispose()
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            cfg = Config()
            cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0008")  # before feedback_comments: only usage rows tell
            conn.commit()
            command.upgrade(cfg, "head")
            conn.commit()
            conn.execute(text("SET app.all_projects = 'on'"))
            rows = conn.execute(
                text("SELECT comment_id, repo, issue_number, pattern_ids FROM feedback_comments")
            ).all()
    finally:
        engine.dispose()
    assert len(rows) == 1 and rows[0][0] == scene.comment_id
    assert sorted(rows[0][3]) == sorted(str(p) for p in scene.listed.values())


def test_a_verdict_on_a_merged_pattern_goes_to_the_one_that_absorbed_it(
    db: Database, github: FakeGitHub, scene: Scene
) -> None:
    """A listed pattern merged into another, which was merged in turn (merges keep the chain one
    link long): a 👍 on the comment confirms the pattern that absorbed both, not the inactive
    merged rows. A pattern only superseded (no merge) keeps its own verdict."""
    from pipeline.store.merge import merge_into

    first_title = EARLIER[0][0]
    other = next(t for t in scene.listed if t != first_title)
    with db.session(ALL_PROJECTS) as s:
        titles = dict(s.execute(select(Pattern.title, Pattern.id)).all())
        middle = next(titles[t] for t, _ in EARLIER if t not in scene.listed)
        final = titles[NEW[0][0]]
        merge_into(s, canonical_id=middle, merged_id=scene.listed[first_title],
                   settings=scene.settings, match="title")  # fmt: skip
        merge_into(s, canonical_id=final, merged_id=middle, settings=scene.settings,
                   match="title")  # fmt: skip
        # Superseded by a newer pattern without a merge: not absorbed.
        s.execute(update(Pattern).where(Pattern.id == scene.listed[other]).values(
            superseded_by=final))  # fmt: skip
    github.react(scene.comment_id, "+1", "ann")

    summary = _poll(db, scene.settings)

    assert (summary.added, summary.errors) == (2, 0)
    with db.session(ALL_PROJECTS) as s:
        confirmed = sorted(
            s.scalars(
                select(PatternValidation.pattern_id).where(
                    PatternValidation.validation_type == "review",
                    PatternValidation.validator == "github:ann",
                )
            ).all()
        )
        flat = s.scalar(select(Pattern.superseded_by).where(
            Pattern.id == scene.listed[first_title]))  # fmt: skip
    assert flat == final  # the first merge's row now points at the last canonical
    assert confirmed == sorted([final, scene.listed[other]])
