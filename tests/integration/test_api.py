"""The HTTP API on a real uvicorn server on loopback, with real signed requests, the embedded
Postgres and Redis (messages are read back from the broker's lists)."""

from __future__ import annotations

import json
import threading
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from pipeline.api.app import create_app
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import ApiKey, Interaction, WebhookDelivery
from pipeline.intake.apikeys import create_api_key
from pipeline.intake.signatures import sign
from pipeline.settings import Settings
from workers.app import make_celery
from workers.dispatch import CeleryDispatcher

pytestmark = pytest.mark.integration

OCTOKIT = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "github" / "octokit-payload-examples"
)
SECRET = "test-secret-☃"
# docs.github.com, "Validating webhook deliveries".
VECTOR_SECRET = "It's a Secret to Everybody"
VECTOR_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"

Serve = Callable[[Any], AbstractContextManager[str]]


def _octokit(relative: str) -> bytes:
    path = OCTOKIT / relative
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared missing?)")
    return path.read_bytes()


def _settings(redis_url: str | None, **extra: Any) -> Settings:
    return Settings(database_url=None, redis_url=redis_url, github_webhook_secret=SECRET, **extra)  # type: ignore[arg-type]


@pytest.fixture()
def api(
    db: Database, redis_url: str, live_server: Serve
) -> Iterator[tuple[httpx.Client, Settings]]:
    """An httpx client on a live server whose dispatcher publishes to the test Redis."""
    settings = _settings(redis_url)
    dispatcher = CeleryDispatcher(make_celery(settings), retry=False)
    app = create_app(settings, db=db, dispatcher=dispatcher)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        yield client, settings


def _deliver(
    client: httpx.Client, event: str, body: bytes, *, delivery: str | None = None,
    secret: str = SECRET, headers: dict[str, str] | None = None,
) -> httpx.Response:  # fmt: skip
    hdrs = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(secret, body),
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/test",
    }
    hdrs.update(headers or {})
    return client.post("/webhooks/github", content=body, headers=hdrs)


def _counts(db: Database) -> tuple[int, int]:
    with db.session(ALL_PROJECTS) as s:
        return (
            int(s.scalar(select(func.count()).select_from(Interaction)) or 0),
            int(s.scalar(select(func.count()).select_from(WebhookDelivery)) or 0),
        )


# --- health and docs ---------------------------------------------------------------------------


def test_healthz_and_docs(api: tuple[httpx.Client, Settings]) -> None:
    client, _ = api
    assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/healthz", "/webhooks/github", "/v1/interactions"} <= set(paths)


# --- signatures --------------------------------------------------------------------------------


def test_github_test_vector_passes_the_signature_check(db: Database, live_server: Serve) -> None:
    """GitHub's documented vector is accepted; its body is not JSON, so the answer is 400, not
    401. A changed byte is 401."""
    settings = Settings(database_url=None, redis_url=None, github_webhook_secret=VECTOR_SECRET)  # type: ignore[call-arg]
    with live_server(create_app(settings, db=db)) as url:
        headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "vector-1",
                   "X-Hub-Signature-256": VECTOR_SIGNATURE}  # fmt: skip
        ok = httpx.post(f"{url}/webhooks/github", content=b"Hello, World!", headers=headers)
        assert ok.status_code == 400 and "malformed JSON" in ok.json()["detail"]
        bad = httpx.post(f"{url}/webhooks/github", content=b"Hello, World?", headers=headers)
        assert bad.status_code == 401
    assert _counts(db) == (0, 0)


def test_previous_secret_is_accepted_while_rotating(db: Database, live_server: Serve) -> None:
    """With GITHUB_WEBHOOK_SECRET_PREVIOUS set, deliveries signed with either secret pass;
    any other secret is still 401."""
    settings = Settings(  # type: ignore[call-arg]
        database_url=None, redis_url=None, github_webhook_secret="new-secret",
        github_webhook_secret_previous="old-secret",
    )  # fmt: skip
    body = b"Hello, World!"
    with live_server(create_app(settings, db=db)) as url:
        for n, (secret, expected) in enumerate(
            [("new-secret", 400), ("old-secret", 400), ("other", 401)]
        ):
            headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": f"rot-{n}",
                       "X-Hub-Signature-256": sign(secret, body)}  # fmt: skip
            resp = httpx.post(f"{url}/webhooks/github", content=body, headers=headers)
            assert resp.status_code == expected, secret


@pytest.mark.parametrize(
    "signature",
    [
        None,
        "",
        "sha256=" + "0" * 64,
        "{digest}",  # the right digest without the sha256= prefix
        "sha1={digest}",
    ],
)
def test_missing_or_wrong_signature_is_401(
    api: tuple[httpx.Client, Settings], db: Database, signature: str | None
) -> None:
    client, _ = api
    body = _octokit("pull_request/opened.payload.json")
    digest = sign(SECRET, body).removeprefix("sha256=")
    headers = {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": "sig-1"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature.format(digest=digest)
    resp = client.post("/webhooks/github", content=body, headers=headers)
    assert resp.status_code == 401
    wrong_secret = _deliver(client, "pull_request", body, secret="not the secret")
    assert wrong_secret.status_code == 401
    assert _counts(db) == (0, 0)


def test_without_a_configured_secret_nothing_is_accepted(db: Database, live_server: Serve) -> None:
    settings = Settings(database_url=None, redis_url=None, github_webhook_secret=None)  # type: ignore[call-arg]
    with live_server(create_app(settings, db=db)) as url, httpx.Client(base_url=url) as client:
        resp = _deliver(client, "ping", _octokit("ping/payload.json"))
    assert resp.status_code == 503
    assert _counts(db) == (0, 0)


# --- malformed and oversized ------------------------------------------------------------------


@pytest.mark.parametrize("body", [b"{not json", b"", b"\xff\xfe{}", b'{"a": 1'])
def test_malformed_json_is_400(
    api: tuple[httpx.Client, Settings], db: Database, body: bytes
) -> None:
    client, _ = api
    assert _deliver(client, "pull_request", body).status_code == 400
    assert _counts(db) == (0, 0)


def test_missing_github_headers_are_400(api: tuple[httpx.Client, Settings]) -> None:
    client, _ = api
    body = _octokit("ping/payload.json")
    for missing in ("X-GitHub-Event", "X-GitHub-Delivery"):
        headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": "h-1",
                   "X-Hub-Signature-256": sign(SECRET, body)}  # fmt: skip
        del headers[missing]
        assert client.post("/webhooks/github", content=body, headers=headers).status_code == 400


@pytest.mark.parametrize(
    ("event", "payload"),
    [
        ("pull_request", {"action": "opened", "repository": {"full_name": "o/r"}}),
        ("issues", {"action": "opened", "issue": {"title": "t"}}),  # no repository
        (
            "issue_comment",
            {"action": "created", "repository": {"full_name": "o/r"}, "issue": {"title": 5}},
        ),
        ("pull_request", [1, 2, 3]),
    ],
)
def test_unusable_delivery_is_422_and_stores_nothing(
    api: tuple[httpx.Client, Settings], db: Database, event: str, payload: object
) -> None:
    client, _ = api
    resp = _deliver(client, event, json.dumps(payload).encode())
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"]
    assert _counts(db) == (0, 0)


def test_over_25_mb_is_413_by_content_length(
    api: tuple[httpx.Client, Settings], db: Database
) -> None:
    client, settings = api
    assert settings.max_request_bytes == 25 * 1024 * 1024
    body = b" " * (settings.max_request_bytes + 1)
    assert _deliver(client, "pull_request", body).status_code == 413
    exactly = b'{"zen": "x"}' + b" " * (settings.max_request_bytes - 12)
    assert len(exactly) == settings.max_request_bytes
    assert _deliver(client, "ping", exactly).status_code == 200
    assert _counts(db) == (0, 1)


def test_over_the_limit_is_413_when_streamed_without_length(
    db: Database, redis_url: str, live_server: Serve
) -> None:
    """A chunked body has no Content-Length: the size of what arrives is checked too."""
    settings = _settings(redis_url, max_request_bytes=64 * 1024)
    with live_server(create_app(settings, db=db)) as url:

        def chunks() -> Iterator[bytes]:
            for _ in range(20):
                yield b" " * 8192

        resp = httpx.post(
            f"{url}/webhooks/github", content=chunks(),
            headers={"X-GitHub-Event": "ping", "X-GitHub-Delivery": "big",
                     "X-Hub-Signature-256": "sha256=" + "0" * 64},
        )  # fmt: skip
    assert "content-length" not in {k.lower() for k in resp.request.headers}
    assert resp.status_code == 413
    assert _counts(db) == (0, 0)


# --- ping, skipped, stored ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "example", ["ping/payload.json", "ping/with-app_id.payload.json",
                "ping/with-organization.payload.json"],
)  # fmt: skip
def test_ping_is_200_with_no_work(
    api: tuple[httpx.Client, Settings], db: Database, queued_tasks: Any, example: str
) -> None:
    client, _ = api
    resp = _deliver(client, "ping", _octokit(example), delivery="ping-1")
    assert resp.status_code == 200
    assert resp.json()["status"] == "pong"
    assert _counts(db) == (0, 1)  # the delivery is recorded, nothing else
    assert queued_tasks() == []


@pytest.mark.parametrize(
    ("event", "example"),
    [
        ("push", "push/payload.json"),
        ("installation", "installation/created.payload.json"),
        ("pull_request_review", "pull_request_review/submitted.payload.json"),
        ("pull_request", "pull_request/labeled.payload.json"),
        ("pull_request", "pull_request/synchronize.payload.json"),
        ("issues", "issues/assigned.with-installation.payload.json"),
        ("issue_comment", "issue_comment/deleted.with-organization.payload.json"),
    ],
)
def test_unknown_events_and_actions_are_2xx_with_no_work(
    api: tuple[httpx.Client, Settings], db: Database, queued_tasks: Any, event: str, example: str
) -> None:
    client, _ = api
    resp = _deliver(client, event, _octokit(example))
    assert resp.status_code == 200, resp.text
    assert resp.json()["status"] == "skipped"
    assert _counts(db) == (0, 1)
    assert queued_tasks() == []


STORED_EXAMPLES = [
    ("pull_request", "pull_request/opened.payload.json", "pull_request"),
    ("pull_request", "pull_request/opened.with-organization.payload.json", "pull_request"),
    ("pull_request", "pull_request/opened.with-null-body.json", "pull_request"),
    (
        "pull_request",
        "pull_request/ready_for_review.with-installation.payload.json",
        "pull_request",
    ),
    ("pull_request", "pull_request/closed.with-organization.payload.json", "pull_request"),
    ("issues", "issues/opened.payload.json", "issue"),
    ("issues", "issues/opened.with-organization.payload.json", "issue"),
    ("issues", "issues/edited.with-organization.payload.json", "issue"),
    ("issue_comment", "issue_comment/created.payload.json", "issue_comment"),
    ("issue_comment", "issue_comment/created.with-installation.payload.json", "issue_comment"),
    ("issue_comment", "issue_comment/created.with-organization.payload.json", "issue_comment"),
]


@pytest.mark.parametrize(("event", "example", "kind"), STORED_EXAMPLES)
def test_deliveries_are_stored_and_enqueued(
    api: tuple[httpx.Client, Settings], db: Database, queued_tasks: Any,
    event: str, example: str, kind: str,
) -> None:  # fmt: skip
    client, _ = api
    delivery = str(uuid.uuid4())
    resp = _deliver(client, event, _octokit(example), delivery=delivery)
    assert resp.status_code == 202, resp.text
    out = resp.json()
    assert out["status"] == "queued" and out["delivery"] == delivery
    iid = out["interaction_id"]
    with db.session(ALL_PROJECTS) as s:
        inter = s.get(Interaction, iid)
        assert inter is not None
        assert (inter.kind, inter.source, inter.status, inter.attempts) == (
            kind,
            "github",
            "queued",
            1,
        )
        assert inter.idempotency_key == f"github:{delivery}"
        assert inter.queued_at is not None
        row = s.scalars(select(WebhookDelivery)).one()
        assert (row.delivery_id, row.event, row.interaction_id, row.outcome) == (
            delivery,
            event,
            iid,
            "stored",
        )
    assert queued_tasks() == [("patterns.extract_batch", [[iid]])]


def test_form_encoded_deliveries_are_accepted(
    api: tuple[httpx.Client, Settings], db: Database
) -> None:
    client, _ = api
    body = urllib.parse.urlencode(
        {"payload": _octokit("issues/opened.payload.json").decode()}
    ).encode()
    resp = _deliver(
        client, "issues", body, headers={"Content-Type": "application/x-www-form-urlencoded"}
    )
    assert resp.status_code == 202, resp.text
    assert _counts(db) == (1, 1)


# --- duplicates and concurrency --------------------------------------------------------------


def test_repeated_delivery_is_2xx_and_creates_nothing(
    api: tuple[httpx.Client, Settings], db: Database, queued_tasks: Any
) -> None:
    client, _ = api
    body = _octokit("pull_request/opened.payload.json")
    first = _deliver(client, "pull_request", body, delivery="dup-1")
    again = _deliver(client, "pull_request", body, delivery="dup-1")
    assert first.status_code == 202 and again.status_code == 200
    assert again.json() == {
        "delivery": "dup-1", "status": "duplicate",
        "interaction_id": first.json()["interaction_id"], "reason": None,
    }  # fmt: skip
    ping = [_deliver(client, "ping", _octokit("ping/payload.json"), delivery="p") for _ in "ab"]
    assert [r.status_code for r in ping] == [200, 200]
    assert _counts(db) == (1, 2)
    assert len(queued_tasks()) == 1
    with db.session(ALL_PROJECTS) as s:
        assert s.scalar(select(Interaction.attempts)) == 1


def test_twenty_simultaneous_posts_of_one_delivery_make_one_interaction(
    api: tuple[httpx.Client, Settings], db: Database, queued_tasks: Any
) -> None:
    client, _ = api
    body = _octokit("issues/opened.with-organization.payload.json")
    barrier = threading.Barrier(20)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def post() -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            barrier.wait()
            resp = _deliver(own, "issues", body, delivery="same-delivery")
        with lock:
            results.append(resp)

    threads = [threading.Thread(target=post) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    codes = sorted(r.status_code for r in results)
    assert len(codes) == 20 and all(200 <= c < 300 for c in codes), codes
    statuses = sorted(r.json()["status"] for r in results)
    assert statuses == ["duplicate"] * 19 + ["queued"]
    assert len({r.json()["interaction_id"] for r in results}) == 1
    assert _counts(db) == (1, 1)
    assert len(queued_tasks()) == 1


def test_broker_down_still_stores_and_answers_2xx(db: Database, live_server: Serve) -> None:
    """Postgres is the source of truth: with Redis unreachable the delivery is committed as
    ``received`` (attempts 0) and left to the outbox sweeper."""
    settings = _settings("redis://127.0.0.1:1/0")
    dispatcher = CeleryDispatcher(make_celery(settings), retry=False)
    app = create_app(settings, db=db, dispatcher=dispatcher)
    with live_server(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        resp = _deliver(client, "issues", _octokit("issues/opened.payload.json"))
    assert resp.status_code == 202 and resp.json()["status"] == "stored"
    with db.session(ALL_PROJECTS) as s:
        inter = s.scalars(select(Interaction)).one()
        assert (inter.status, inter.attempts, inter.queued_at) == ("received", 0, None)


# --- POST /v1/interactions --------------------------------------------------------------------


@pytest.fixture()
def api_key(db: Database) -> str:
    with db.session(ALL_PROJECTS) as s:
        _, key = create_api_key(s, "acme/widgets", "tests")
    return key


def test_interactions_need_a_valid_key(
    api: tuple[httpx.Client, Settings], db: Database, api_key: str
) -> None:
    client, _ = api
    body = {"content": "We retry Redis connections with exponential backoff."}
    assert client.post("/v1/interactions", json=body).status_code == 401
    wrong = client.post("/v1/interactions", json=body, headers={"Authorization": "Bearer pp_x"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
    basic = client.post("/v1/interactions", json=body, headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401
    with db.session(ALL_PROJECTS) as s:
        s.execute(update(ApiKey).values(revoked_at=func.now()))
    revoked = client.post(
        "/v1/interactions", json=body, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert revoked.status_code == 401
    assert _counts(db) == (0, 0)


def test_single_interaction_is_idempotent_on_its_header(
    api: tuple[httpx.Client, Settings], db: Database, api_key: str, queued_tasks: Any
) -> None:
    client, _ = api
    auth = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": "req-1"}
    body = {"content": "Pin transitive dependencies in CI.", "kind": "conversation",
            "author": "dev", "metadata": {"channel": "slack"}}  # fmt: skip
    first = client.post("/v1/interactions", json=body, headers=auth)
    assert first.status_code == 202, first.text
    out = first.json()
    assert out["created"] is True and out["status"] == "queued"
    again = client.post("/v1/interactions", json={**body, "content": "changed"}, headers=auth)
    assert again.status_code == 200
    assert again.json() == {"id": out["id"], "created": False, "status": "existing"}
    with db.session(ALL_PROJECTS) as s:
        inter = s.scalars(select(Interaction)).one()
        assert inter.source == "api" and inter.content == body["content"]
        assert inter.idempotency_key.startswith("api:") and inter.idempotency_key.endswith(":req-1")
        assert inter.metadata_ == {"channel": "slack"} and inter.attempts == 1
    assert queued_tasks() == [("patterns.extract_batch", [[out["id"]]])]


def test_bulk_interactions(
    api: tuple[httpx.Client, Settings], db: Database, api_key: str, queued_tasks: Any
) -> None:
    client, _ = api
    auth = {"Authorization": f"Bearer {api_key}"}
    items = [
        {"content": "Use a connection pool per process.", "idempotency_key": "a"},
        {"content": "Close cursors in finally blocks.", "project": "acme/widgets"},
        {"content": "Use a connection pool per process.", "idempotency_key": "a"},  # same key
    ]
    first = client.post("/v1/interactions", json=items, headers=auth)
    assert first.status_code == 202, first.text
    out = first.json()
    assert (out["created"], out["existing"]) == (2, 1)
    ids = [i["id"] for i in out["items"]]
    assert ids[0] == ids[2] and ids[0] != ids[1]
    replay = client.post("/v1/interactions", json=items, headers=auth)
    assert replay.status_code == 200
    assert [i["id"] for i in replay.json()["items"]] == ids
    assert replay.json()["created"] == 0
    assert _counts(db) == (2, 0)
    assert queued_tasks() == [("patterns.extract_batch", [sorted(set(ids))])]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body", "content"]),
        ({"content": ""}, ["body", "content"]),
        ({"content": "   "}, ["body", "content"]),
        ({"content": 5}, ["body", "content"]),
        ({"content": "x", "kind": "Not A Kind"}, ["body", "kind"]),
        ({"content": "x", "occurred_at": "yesterday"}, ["body", "occurred_at"]),
        ({"content": "x", "surprise": 1}, ["body", "surprise"]),
        ([{"content": "ok"}, {"content": "x", "metadata": []}], ["body", 1, "metadata"]),
        ("just a string", ["body"]),
    ],
)
def test_validation_errors_are_422_naming_the_field(
    api: tuple[httpx.Client, Settings], db: Database, api_key: str, body: object, loc: list[Any]
) -> None:
    client, _ = api
    resp = client.post(
        "/v1/interactions", json=body, headers={"Authorization": f"Bearer {api_key}"}
    )
    assert resp.status_code == 422, resp.text
    assert loc in [e["loc"] for e in resp.json()["detail"]]
    assert _counts(db) == (0, 0)


def test_interactions_malformed_json_and_foreign_project(
    api: tuple[httpx.Client, Settings], db: Database, api_key: str
) -> None:
    client, _ = api
    auth = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    assert client.post("/v1/interactions", content=b"{oops", headers=auth).status_code == 400
    other = client.post(
        "/v1/interactions", json={"content": "x", "project": "someone/else"}, headers=auth
    )
    assert other.status_code == 403
    assert _counts(db) == (0, 0)


def test_twenty_simultaneous_submissions_with_one_idempotency_key(
    api: tuple[httpx.Client, Settings], db: Database, api_key: str, queued_tasks: Any
) -> None:
    client, _ = api
    headers = {"Authorization": f"Bearer {api_key}", "Idempotency-Key": "same"}
    barrier = threading.Barrier(20)
    results: list[httpx.Response] = []
    lock = threading.Lock()

    def post(i: int) -> None:
        with httpx.Client(base_url=str(client.base_url), timeout=60) as own:
            barrier.wait()
            resp = own.post("/v1/interactions", json={"content": f"attempt {i}"}, headers=headers)
        with lock:
            results.append(resp)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r.status_code for r in results) == [200] * 19 + [202]
    assert len({r.json()["id"] for r in results}) == 1
    assert _counts(db) == (1, 0)
    assert len(queued_tasks()) == 1


def test_serve_command_on_loopback(
    database_url: str,
    db: Database,
    redis_url: str,
    queued_tasks: Any,
    tmp_path: Path,
    die_with_parent: Any,
) -> None:
    """``patterns serve`` in a subprocess: health, a signed ping, a stored and queued delivery."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from support.processes import free_port

    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PATTERNS_")}
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url, GITHUB_WEBHOOK_SECRET=SECRET,
               PATTERNS_DATA_DIR=str(tmp_path))  # fmt: skip
    log = tmp_path / "serve.log"
    patterns = Path(sys.executable).with_name("patterns")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(patterns), "serve", "--port", str(port)], env=env, stdout=out,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=die_with_parent,
        )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
            with httpx.Client(base_url=base, timeout=30) as client:
                assert _deliver(client, "ping", _octokit("ping/payload.json")).status_code == 200
                stored = _deliver(client, "issues", _octokit("issues/opened.payload.json"))
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
    assert stored.status_code == 202 and stored.json()["status"] == "queued", stored.text
    assert queued_tasks() == [("patterns.extract_batch", [[stored.json()["interaction_id"]]])]
    assert _counts(db) == (1, 2)
    # uvicorn shuts down gracefully, then re-raises the signal it caught (exit -SIGTERM).
    assert "Application shutdown complete" in log.read_text(), log.read_text()[-3000:]


def test_a_renamed_repository_keeps_its_project(
    api: tuple[httpx.Client, Settings], db: Database
) -> None:
    """Projects map by repository id: a delivery after a rename (same id, new full_name) goes to
    the same project instead of failing on the unique repository id."""
    from pipeline.db.models import Project

    client, _ = api
    payload = json.loads(_octokit("issues/opened.payload.json"))
    first = _deliver(client, "issues", json.dumps(payload).encode())
    payload["repository"]["full_name"] = "Codertocat/Hello-World-renamed"
    payload["repository"]["name"] = "Hello-World-renamed"
    second = _deliver(client, "issues", json.dumps(payload).encode())
    assert (first.status_code, second.status_code) == (202, 202), second.text
    with db.session(ALL_PROJECTS) as s:
        projects = s.execute(select(Project.name, Project.github_repo_id)).all()
        assert projects == [("Codertocat/Hello-World", payload["repository"]["id"])]
        assert len(set(s.scalars(select(Interaction.project_id)).all())) == 1
