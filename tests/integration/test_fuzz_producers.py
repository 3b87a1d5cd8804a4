"""Fuzzing the producer endpoints (hypothesis) on a real uvicorn with the embedded Postgres:
whatever the signature, encoding, size, nesting or JSON values, ``POST /webhooks/github`` and
``POST /v1/interactions`` answer a documented status, never a 5xx, and a rejected request stores
nothing (rows of interactions, webhook_deliveries and projects counted before and after).

``PATTERNS_TEST_FUZZ_EXAMPLES`` sets the examples per endpoint (default 400: about 8 s each on a
2-core machine); ``-s`` prints how many ran and their statuses.
"""

from __future__ import annotations

import copy
import json
import os
import re
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from sqlalchemy import func, select

from pipeline.api.app import create_app
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import Interaction, Project, WebhookDelivery
from pipeline.intake.apikeys import create_api_key
from pipeline.intake.signatures import sign
from pipeline.settings import Settings

pytestmark = pytest.mark.integration

EXAMPLES = int(os.environ.get("PATTERNS_TEST_FUZZ_EXAMPLES", "400"))
OCTOKIT = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "github" / "octokit-payload-examples"
)
SECRET = "fuzz-secret"
#: Small, so that the size dimension reaches 413 without megabytes per example.
MAX_BYTES = 64 * 1024
Serve = Callable[[Any], AbstractContextManager[str]]
FUZZ = hsettings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# --- strategies --------------------------------------------------------------------------------


def _one_in(n: int) -> st.SearchStrategy[bool]:
    """True about once in ``n``. (Weights by repetition do not work: ``one_of`` drops repeated
    strategies, and integers near the bounds are drawn far more often than the rest.)"""
    return st.sampled_from([False] * (n - 1) + [True])


def _rarely(
    usual: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], n: int
) -> st.SearchStrategy[Any]:
    """``odd`` about once in ``n`` draws, ``usual`` otherwise."""
    return _one_in(n).flatmap(lambda b: odd if b else usual)


#: Characters Postgres or UTF-8 cannot hold, markup that lands in comments, and the usual suspects.
SPECIAL = st.sampled_from(
    ["\x00", "\ud800", "\udfff", "\U0001f600", "\ufffd", "<!--", "-->", "\r\n", "é", "\u2028",
     "'; DROP TABLE projects; --", "\x7f", "\\u0000", "%00", " "]
)  # fmt: skip
TEXT = st.lists(
    st.one_of(st.text(st.characters(exclude_categories=()), max_size=8), SPECIAL), max_size=6
).map("".join)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**80), max_value=2**80),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**400, 0, -1, True]),
    st.floats(),  # NaN and infinities included: json.dumps writes NaN, Infinity
)
#: Literals json.dumps cannot write, spliced into the text: ``"@raw:X@"`` becomes ``X``.
DEPTHS = _rarely(st.integers(0, 70), st.sampled_from([500, 1000, 3000, 30_000]), 4)
RAW = st.one_of(
    st.sampled_from(["@raw:1e999@", "@raw:-1e999@", "@raw:1E400@", "@raw:-0@", "@raw:1e-999@"]),
    DEPTHS.map(lambda d: f"@raw:{'[' * d}{']' * d}@"),
    DEPTHS.map(lambda d: "@raw:" + '{"a": ' * d + "1" + "}" * d + "@"),
)
JSON = st.recursive(
    st.one_of(st.none(), st.booleans(), NUMBERS, TEXT),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)
#: A value put in a field: JSON, sometimes a raw literal or deep nesting.
VALUE = _rarely(JSON, RAW, 6)
_RAW = re.compile(r'"@raw:(.*?)@"')


@st.composite
def encoded(draw: st.DrawFn, value: Any) -> bytes:
    """``value`` as a body: JSON in one of several encodings (invalid UTF-8 where a lone
    surrogate is written raw), raw literals spliced in, optional padding; or random bytes."""
    if draw(_one_in(20)):
        return draw(st.binary(max_size=300))
    encoding = draw(st.sampled_from(["ascii", "utf-8", "utf-16"]))
    text = json.dumps(value, ensure_ascii=encoding == "ascii")
    text = _RAW.sub(lambda m: json.loads(f'"{m.group(1)}"'), text)
    if draw(_one_in(10)):
        text += " " * draw(st.integers(0, 2 * MAX_BYTES))
    return text.encode(encoding, "surrogatepass")


#: Header values an HTTP/1.1 client can send (h11: no controls, no surrounding blanks).
HEADER_TEXT = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=120
).map(lambda s: s.strip(" \t").encode("latin-1"))


def _mostly(usual: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` three times in four, any value otherwise."""
    return _rarely(usual, VALUE, 4)


ITEM = st.fixed_dictionaries(
    {"content": _mostly(TEXT.filter(lambda t: t.strip()))},
    optional={
        "kind": _mostly(st.sampled_from(["conversation", "pull_request", "design_review"])),
        "author": _mostly(TEXT),
        "external_id": _mostly(TEXT),
        "metadata": _mostly(
            st.dictionaries(
                TEXT, st.one_of(TEXT, st.integers(-(2**63), 2**63 - 1), VALUE), max_size=4
            )
        ),
        "occurred_at": _mostly(st.datetimes().map(lambda d: d.isoformat())),
        "idempotency_key": _mostly(TEXT.filter(bool)),
        "project": _mostly(st.just("acme/widgets")),
    },
)
INTERACTION_BODY = _rarely(st.one_of(ITEM, st.lists(ITEM, max_size=3)), VALUE, 6)

BASES = {
    "pull_request": "pull_request/opened.payload.json",
    "issues": "issues/opened.payload.json",
    "issue_comment": "issue_comment/created.payload.json",
    "ping": "ping/payload.json",
}
PATHS = [
    ("pull_request", "body"), ("pull_request", "title"), ("pull_request", "number"),
    ("pull_request", "additions"), ("pull_request", "changed_files"), ("pull_request", "labels"),
    ("pull_request", "user"), ("pull_request", "html_url"), ("issue", "body"), ("issue", "title"),
    ("comment", "body"), ("repository", "id"), ("repository", "full_name"), ("repository",),
    ("action",), ("sender", "login"), ("zen",),
]  # fmt: skip


def _base(event: str) -> dict[str, Any]:
    path = OCTOKIT / BASES.get(event, BASES["ping"])
    if not path.is_file():
        pytest.skip(f"{path} not found (../shared missing?)")
    payload: dict[str, Any] = json.loads(path.read_bytes())
    return payload


def _mutate(payload: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    parent = payload
    for key in path[:-1]:
        child = parent.get(key)
        if not isinstance(child, dict):
            return
        parent = child
    parent[path[-1]] = value


def _counts(db: Database) -> tuple[int, ...]:
    with db.session(ALL_PROJECTS) as s:
        return tuple(
            int(s.scalar(select(func.count()).select_from(t)) or 0)
            for t in (Interaction, WebhookDelivery, Project)
        )


def _app(db: Database) -> Any:
    settings = Settings(  # type: ignore[call-arg]
        database_url=None, redis_url=None, github_webhook_secret=SECRET,
        max_request_bytes=MAX_BYTES,
    )  # fmt: skip
    return create_app(settings, db=db)


def _check(db: Database, before: tuple[int, ...], resp: httpx.Response, allowed: set[int]) -> None:
    assert resp.status_code < 500, resp.text
    assert resp.status_code in allowed, (resp.status_code, resp.text)
    if resp.status_code >= 400:
        assert _counts(db) == before, resp.text


# --- the tests ---------------------------------------------------------------------------------


def test_fuzz_webhooks(db: Database, live_server: Serve) -> None:
    bases = {event: _base(event) for event in BASES}
    ran = []
    with live_server(_app(db)) as url, httpx.Client(base_url=url, timeout=60) as http:

        @FUZZ
        @given(
            event=_rarely(st.sampled_from([*BASES, "push", "issues"]), HEADER_TEXT, 6),
            mutations=st.lists(st.tuples(st.sampled_from(PATHS), VALUE), max_size=3),
            signature=st.sampled_from(["valid"] * 6 + ["invalid", "missing", "garbage"]),
            delivery=_rarely(st.none(), HEADER_TEXT, 6),  # None: a fresh UUID
            form=_one_in(4),
            data=st.data(),
        )
        def one(
            event: str | bytes, mutations: list[tuple[tuple[str, ...], Any]], signature: str,
            delivery: bytes | None, form: bool, data: st.DataObject,
        ) -> None:  # fmt: skip
            name = event.decode("latin-1") if isinstance(event, bytes) else event
            payload = copy.deepcopy(bases.get(name, bases["ping"]))
            for path, value in mutations:
                _mutate(payload, path, value)
            body = data.draw(encoded(payload))
            if form:
                body = b"payload=" + re.sub(rb"[^A-Za-z0-9]", lambda m: b"%%%02X" % m[0][0], body)
            headers: dict[str, Any] = {
                "X-GitHub-Event": event,
                # Fresh per call, so that a replayed example is not a duplicate delivery.
                "X-GitHub-Delivery": delivery if delivery is not None else str(uuid.uuid4()),
                "Content-Type": "application/x-www-form-urlencoded" if form
                else "application/json",
            }  # fmt: skip
            if signature == "garbage":
                headers["X-Hub-Signature-256"] = b"sha256=" + data.draw(HEADER_TEXT)
            elif signature != "missing":
                headers["X-Hub-Signature-256"] = sign(
                    SECRET if signature == "valid" else "wrong", body
                )
            before = _counts(db)
            resp = http.post("/webhooks/github", content=body, headers=headers)
            _check(db, before, resp, {200, 202, 400, 401, 413, 422})
            if signature != "valid":
                assert resp.status_code in (401, 413), resp.text
            ran.append(resp.status_code)

        one()
    print(f"webhooks: {len(ran)} examples, statuses {sorted(Counter(ran).items())}")


def test_fuzz_interactions(db: Database, live_server: Serve) -> None:
    with db.session(ALL_PROJECTS) as s:
        _, key = create_api_key(s, "acme/widgets", "fuzz")
    ran = []
    with live_server(_app(db)) as url, httpx.Client(base_url=url, timeout=60) as http:

        @FUZZ
        @given(
            value=INTERACTION_BODY,
            auth=st.sampled_from(["valid"] * 6 + ["wrong", "missing"]),
            idempotency=st.one_of(st.none(), HEADER_TEXT, st.uuids().map(lambda u: str(u))),
            data=st.data(),
        )
        def one(value: Any, auth: str, idempotency: Any, data: st.DataObject) -> None:
            body = data.draw(encoded(value))
            headers: dict[str, Any] = {"Content-Type": "application/json"}
            if auth != "missing":
                headers["Authorization"] = f"Bearer {key if auth == 'valid' else 'pp_' + 'x' * 40}"
            if idempotency is not None:
                headers["Idempotency-Key"] = idempotency
            before = _counts(db)
            resp = http.post("/v1/interactions", content=body, headers=headers)
            _check(db, before, resp, {200, 202, 400, 401, 403, 413, 422})
            if auth != "valid":
                assert resp.status_code == 401, resp.text
            ran.append(resp.status_code)

        one()
    print(f"interactions: {len(ran)} examples, statuses {sorted(Counter(ran).items())}")
