"""Bad input on the producer endpoints gets a 4xx, never a 500, stores nothing when rejected, and
what is stored sanitised is still extracted; a poisoned stored value cannot fail others' batch.

The rules are in ``pipeline/intake/jsonsafe.py`` (README, "API"): U+0000 and lone surrogates
become U+FFFD; non-finite numbers and integers outside 64 bits are 422 naming the field; nesting
deeper than 64 levels is 400; ``X-GitHub-Delivery`` is ``[A-Za-z0-9-]{1,100}``; at most
``webhook_max_concurrency`` webhook bodies are read and verified at once (503 + Retry-After).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update
from support.dispatch import RecordingDispatcher
from support.replay_llm import ReplayLLM, pattern

from pipeline.api.app import create_app
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, Project, WebhookDelivery
from pipeline.extract.flow import extract_claimed
from pipeline.intake.apikeys import create_api_key
from pipeline.intake.signatures import sign
from pipeline.settings import Settings
from pipeline.spend.placement import place
from pipeline.types import TaskType

pytestmark = pytest.mark.integration

OCTOKIT = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "github" / "octokit-payload-examples"
)
SECRET = "bad-input-secret"
Serve = Callable[[Any], AbstractContextManager[str]]


def _pr_opened() -> dict[str, Any]:
    path = OCTOKIT / "pull_request" / "opened.payload.json"
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared missing?)")
    payload: dict[str, Any] = json.loads(path.read_bytes())
    return payload


def _settings(**extra: Any) -> Settings:
    return Settings(database_url=None, redis_url=None, github_webhook_secret=SECRET, **extra)  # type: ignore[arg-type]


@pytest.fixture()
def client(db: Database, live_server: Serve) -> Iterator[httpx.Client]:
    with (
        live_server(create_app(_settings(), db=db)) as url,
        httpx.Client(base_url=url, timeout=60) as http,
    ):
        yield http


@pytest.fixture()
def auth(db: Database) -> dict[str, str]:
    with db.session(ALL_PROJECTS) as s:
        _, key = create_api_key(s, "acme/widgets", "tests")
    return {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}


def _deliver(
    client: httpx.Client, body: bytes, *, event: str = "pull_request", delivery: str | None = None
) -> httpx.Response:
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(SECRET, body),
        "Content-Type": "application/json",
    }
    return client.post("/webhooks/github", content=body, headers=headers)


def _counts(db: Database) -> tuple[int, int, int]:
    """Rows of interactions, webhook_deliveries and projects."""
    with db.session(ALL_PROJECTS) as s:
        return tuple(  # type: ignore[return-value]
            int(s.scalar(select(func.count()).select_from(t)) or 0)
            for t in (Interaction, WebhookDelivery, Project)
        )


def _stored(db: Database, iid: int) -> Interaction:
    with db.session(ALL_PROJECTS) as s:
        row = s.get(Interaction, iid)
        assert row is not None
        s.expunge(row)
        return row


# --- webhooks: text is stored sanitised -------------------------------------------------------


@pytest.mark.parametrize("bad", ["\u0000", "\ud800", "\udfff\u0000\ud83d"])
def test_webhook_text_with_nul_or_lone_surrogates_is_stored_sanitised(
    client: httpx.Client, db: Database, bad: str
) -> None:
    """A real delivery with a NUL in its body is still stored (GitHub does not redeliver on its
    own): every unstorable character becomes U+FFFD, in text, logins, names and keys alike."""
    payload = _pr_opened()
    payload["pull_request"]["body"] = f"Fix the{bad}crash"
    payload["pull_request"]["title"] = f"Title{bad}"
    payload["pull_request"]["user"]["login"] = f"dev{bad}"
    payload["repository"]["full_name"] = f"octo/repo{bad}"
    payload["pull_request"]["labels"] = [{"name": f"bug{bad}", f"k{bad}": 1}]
    body = json.dumps(payload).encode()  # ensure_ascii: "\\u0000", "\\ud800" escapes
    resp = _deliver(client, body)
    assert resp.status_code == 202, resp.text
    row = _stored(db, resp.json()["interaction_id"])
    fffd = "\ufffd" * len(bad)
    assert f"Fix the{fffd}crash" in row.content and f"Title{fffd}" in row.content
    assert row.author == f"dev{fffd}" and row.metadata_["labels"] == [f"bug{fffd}"]
    with db.session(ALL_PROJECTS) as s:
        assert s.scalar(select(Project.name)) == f"octo/repo{fffd}"


def test_webhook_text_field_of_another_json_type_is_dropped(
    client: httpx.Client, db: Database
) -> None:
    """Found by the fuzz test: a list in ``pull_request.html_url`` was a 500."""
    payload = _pr_opened()
    payload["pull_request"]["html_url"] = [[], True, [True, False, None]]
    resp = _deliver(client, json.dumps(payload).encode())
    assert resp.status_code == 202, resp.text
    assert _stored(db, resp.json()["interaction_id"]).external_id is None


# --- webhooks: unusable numbers, nesting, headers: 4xx, nothing stored ------------------------


@pytest.mark.parametrize(
    ("where", "raw", "field"),
    [
        (("repository", "id"), str(2**70), "repository.id"),
        (("pull_request", "additions"), "NaN", "pull_request.additions"),
        (("pull_request", "deletions"), "-Infinity", "pull_request.deletions"),
        (("pull_request", "changed_files"), "1e999", "pull_request.changed_files"),
        (("pull_request", "changed_files"), "1" + "0" * 400, "pull_request.changed_files"),
    ],
)
def test_webhook_unusable_numbers_are_422_naming_the_field(
    client: httpx.Client, db: Database, where: tuple[str, str], raw: str, field: str
) -> None:
    payload = _pr_opened()
    payload[where[0]][where[1]] = "@@HERE@@"
    body = json.dumps(payload).replace('"@@HERE@@"', raw).encode()
    resp = _deliver(client, body)
    assert resp.status_code == 422, resp.text
    assert field in resp.json()["detail"]
    assert _counts(db) == (0, 0, 0)


@pytest.mark.parametrize("depth", [65, 1000, 100_000])
def test_webhook_deep_nesting_is_400(client: httpx.Client, db: Database, depth: int) -> None:
    payload = _pr_opened()
    payload["pull_request"]["body"] = "@@HERE@@"
    deep = "[" * depth + "]" * depth
    body = json.dumps(payload).replace('"@@HERE@@"', deep).encode()
    resp = _deliver(client, body)
    assert resp.status_code == 400, resp.text
    assert "nest" in resp.json()["detail"]
    assert _counts(db) == (0, 0, 0)


@pytest.mark.parametrize("delivery", ["<!-- x -->", "a b", "x" * 101, "dé", "a_b", "a/b", "--!>"])
def test_webhook_delivery_id_outside_its_charset_is_400(
    client: httpx.Client, db: Database, delivery: str
) -> None:
    body = json.dumps(_pr_opened()).encode()
    headers = {
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(SECRET, body),
    }
    resp = client.post(
        "/webhooks/github", content=body,
        headers={k: v.encode("utf-8") for k, v in headers.items()},  # type: ignore[misc]
    )  # fmt: skip
    assert resp.status_code == 400, resp.text
    assert "X-GitHub-Delivery" in resp.json()["detail"]
    assert _counts(db) == (0, 0, 0)


def test_webhook_bodies_beyond_the_concurrency_limit_are_503(
    db: Database, live_server: Serve
) -> None:
    """With one slot, a second delivery arriving while a first body is still being read is
    answered 503 with Retry-After (GitHub counts it as a failed delivery, redeliverable); once
    the first is done, the slot is free again."""
    settings = _settings(webhook_max_concurrency=1)
    body = json.dumps(_pr_opened()).encode()
    started, release = threading.Event(), threading.Event()

    def slow() -> Iterator[bytes]:
        yield body[:10]
        started.set()
        release.wait(30)
        yield body[10:]

    headers = {"X-GitHub-Event": "pull_request", "X-Hub-Signature-256": sign(SECRET, body)}
    app = create_app(settings, db=db)
    with live_server(app) as url, httpx.Client(base_url=url) as http:
        results: list[httpx.Response] = []

        def post_slowly() -> None:
            one = {**headers, "X-GitHub-Delivery": "one"}
            results.append(http.post("/webhooks/github", content=slow(), headers=one))

        first = threading.Thread(target=post_slowly)
        first.start()
        assert started.wait(30)
        deadline = time.monotonic() + 30
        while app.state.pipeline.webhook_gate.held < 1:  # the server is inside the first body
            assert time.monotonic() < deadline
            time.sleep(0.01)
        busy = http.post(
            "/webhooks/github", content=body, headers={**headers, "X-GitHub-Delivery": "two"}
        )
        release.set()
        first.join(30)
        again = http.post(
            "/webhooks/github", content=body, headers={**headers, "X-GitHub-Delivery": "three"}
        )
    assert busy.status_code == 503 and int(busy.headers["retry-after"]) > 0
    assert results[0].status_code == 202 and again.status_code == 202
    assert _counts(db)[:2] == (2, 2) and app.state.pipeline.webhook_gate.held == 0


# --- POST /v1/interactions ----------------------------------------------------------------------


def test_interaction_text_with_nul_or_lone_surrogates_is_stored_sanitised(
    client: httpx.Client, db: Database, auth: dict[str, str]
) -> None:
    item = {"content": "a\u0000b\ud800c", "author": "x\u0000", "metadata": {"k\ud800": "v\u0000"}}
    resp = client.post("/v1/interactions", content=json.dumps(item).encode(), headers=auth)
    assert resp.status_code == 202, resp.text
    row = _stored(db, resp.json()["id"])
    assert (row.content, row.author) == ("a\ufffdb\ufffdc", "x\ufffd")
    assert row.metadata_ == {"k\ufffd": "v\ufffd"}


@pytest.mark.parametrize(
    ("raw", "loc"),
    [
        ('{"content": "x", "metadata": {"n": NaN}}', ["body", "metadata", "n"]),
        ('{"content": "x", "metadata": {"n": Infinity}}', ["body", "metadata", "n"]),
        ('{"content": "x", "metadata": {"n": 1e999}}', ["body", "metadata", "n"]),
        ('{"content": "x", "metadata": {"n": [1, -1e999]}}', ["body", "metadata", "n", 1]),
        (f'{{"content": "x", "metadata": {{"n": {2**70}}}}}', ["body", "metadata", "n"]),
        (f'{{"content": "x", "metadata": {{"changed_files": 1{"0" * 400}}}}}',
         ["body", "metadata", "changed_files"]),
        (f'[{{"content": "x"}}, {{"content": "y", "metadata": {{"a": {-(2**63) - 1}}}}}]',
         ["body", 1, "metadata", "a"]),
    ],
)  # fmt: skip
def test_interaction_unusable_numbers_are_422_naming_the_field(
    client: httpx.Client, db: Database, auth: dict[str, str], raw: str, loc: list[Any]
) -> None:
    resp = client.post("/v1/interactions", content=raw.encode(), headers=auth)
    assert resp.status_code == 422, resp.text
    assert loc in [e["loc"] for e in resp.json()["detail"]]
    assert _counts(db)[:2] == (0, 0)


def test_interaction_64_bit_integers_are_accepted(
    client: httpx.Client, db: Database, auth: dict[str, str]
) -> None:
    raw = f'{{"content": "x", "metadata": {{"a": {2**63 - 1}, "b": {-(2**63)}, "c": 1e308}}}}'
    resp = client.post("/v1/interactions", content=raw.encode(), headers=auth)
    assert resp.status_code == 202, resp.text
    stored = _stored(db, resp.json()["id"]).metadata_
    assert (stored["a"], stored["b"]) == (2**63 - 1, -(2**63)) and float(stored["c"]) == 1e308


@pytest.mark.parametrize("depth", [63, 1000, 100_000])
def test_interaction_deep_nesting_is_400(
    client: httpx.Client, db: Database, auth: dict[str, str], depth: int
) -> None:
    raw = '{"content": "x", "metadata": {"a": ' + "[" * depth + "]" * depth + "}}"
    resp = client.post("/v1/interactions", content=raw.encode(), headers=auth)
    assert resp.status_code == 400, resp.text
    assert "nest" in resp.json()["detail"]
    assert _counts(db)[:2] == (0, 0)


# --- a poisoned stored value cannot fail the batch ------------------------------------------


@pytest.mark.parametrize(
    "poison",
    [
        {"changed_files": 10**400},
        {"additions": 10**400, "deletions": 10**400},
        {"changed_files": 2**1000, "priority": ["emergency"]},
        {"files": 10**400, "changed_files": -(10**400)},
    ],
)
def test_a_poisoned_interaction_does_not_fail_the_batch(
    db: Database, stored_interactions: Any, poison: dict[str, Any]
) -> None:
    """Metadata holding a number no float can hold (stored before the API refused them, or
    written by other means) is treated as absent by routing; the batch is placed and extracted,
    the poisoned interaction included."""
    ids = stored_interactions(3, content="PR {i}: retry the broker connection")
    with db.session(ALL_PROJECTS) as s:
        s.execute(update(Interaction).where(Interaction.id == ids[1]).values(metadata_=poison))
    settings = _settings()
    placement = place(db, settings, ids, TaskType.PATTERN_EXTRACTION)
    assert sorted(placement.local) == sorted(ids)
    llm = ReplayLLM({f"PR {i}:": {"patterns": [pattern(f"Retry {i}")], "relationships": []}
                     for i in range(3)})  # fmt: skip
    summary = extract_claimed(
        db=db,
        engine=llm,
        settings=settings,
        dispatcher=RecordingDispatcher(eager=True),
        interaction_ids=ids,
    )
    assert (summary.extracted, summary.failed) == (3, 0)


def test_an_interaction_that_scoring_fails_on_is_placed_alone(
    db: Database, stored_interactions: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever makes scoring fail for one interaction (here, a scorer that raises on it), the
    batch is placed: that one locally with no stored complexity, the others scored."""
    import pipeline.spend.placement as placement

    real = placement.complexity

    def fragile(content: str, metadata: Any = None) -> float:
        if content.startswith("PR 1:"):
            raise OverflowError("int too large to convert to float")
        return real(content, metadata)

    monkeypatch.setattr(placement, "complexity", fragile)
    ids = stored_interactions(3, content="PR {i}: retry the broker connection")
    out = place(db, _settings(), ids, TaskType.PATTERN_EXTRACTION)
    assert sorted(out.local) == sorted(ids)
    with db.session(ALL_PROJECTS) as s:
        scored = dict(s.execute(select(Interaction.id, Interaction.complexity)).tuples().all())
    assert scored[ids[1]] is None and scored[ids[0]] is not None and scored[ids[2]] is not None
