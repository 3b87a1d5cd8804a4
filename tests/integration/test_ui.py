"""The explorer (``/ui``) over HTTP on a real uvicorn, the embedded Postgres and the real MiniLM:
sign-in and its refusals, the session cookie, search, a pattern's page, the graph's data, the
operator page, row-level security between projects, revocation, redirects that stay inside the
explorer, the security headers, and the pages without the vendored scripts. (What a browser
does with the pages is tests/browser/test_explorer.py.)"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from support.explorer_world import (
    ADMIN,
    B_TITLES,
    PARAPHRASE,
    RECONNECT_TEST,
    RETRY,
    A,
    B,
    World,
    populate,
    settings_for_tests,
)

from pipeline.api.app import create_app
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.intake.apikeys import create_api_key, list_keys, revoke_key
from pipeline.settings import Settings

pytestmark = pytest.mark.integration

Serve = Callable[[Any], AbstractContextManager[str]]
Served = tuple[httpx.Client, World, Database]


def _client(url: str) -> httpx.Client:
    return httpx.Client(base_url=url, timeout=60, follow_redirects=False)


@pytest.fixture()
def served(db: Database, embedder: Any, live_server: Serve) -> Iterator[Served]:
    settings = settings_for_tests()
    world = populate(db, embedder, settings)
    with live_server(create_app(settings, db=db, embedder=embedder)) as url, _client(url) as c:
        yield c, world, db


def _sign_in(client: httpx.Client, key: str, **extra: str) -> httpx.Response:
    return client.post("/ui/signin", data={"key": key, **extra})


def test_wrong_or_empty_key_is_refused_with_a_visible_error(served: Served) -> None:
    client, _, _ = served
    assert client.get("/ui/").headers["location"] == "/ui/signin"
    form = client.get("/ui/signin")
    assert form.status_code == 200 and '<label for="key">' in form.text
    for key, message in (("pp_not-a-key", "not valid"), ("", "Enter an API key")):
        refused = _sign_in(client, key)
        assert refused.status_code == 401 and 'role="alert"' in refused.text
        assert message in refused.text and 'aria-invalid="true"' in refused.text
        assert "patterns_ui" not in refused.headers.get("set-cookie", "")
    assert client.get("/ui/search").headers["location"].startswith("/ui/signin?next=")


def test_a_project_key_signs_in_and_searches_its_own_patterns(served: Served) -> None:
    client, world, _ = served
    signed = _sign_in(client, world.keys[A])
    assert signed.status_code == 303 and signed.headers["location"] == "/ui/search"
    cookie = signed.headers["set-cookie"]
    assert "patterns_ui=" in cookie and "httponly" in cookie.lower() and "path=/ui" in cookie
    assert world.keys[A] not in cookie  # the key's id is kept, never the key
    browse = client.get("/ui/search")
    assert RETRY in browse.text and RECONNECT_TEST in browse.text
    found = client.get("/ui/search", params={"q": PARAPHRASE})
    assert found.status_code == 200 and "<html" in found.text
    first = found.text.index(RETRY)
    assert first < found.text.index(RECONNECT_TEST)
    assert "https://github.com/acme/api/pull/100" in found.text  # the source, a link
    assert not any(title in found.text for title in B_TITLES)  # row-level security
    typed = client.get(
        "/ui/search", params={"q": PARAPHRASE, "type": "testing"}, headers={"HX-Target": "results"}
    )
    assert "<html" not in typed.text  # htmx gets the results alone
    assert RECONNECT_TEST in typed.text and RETRY not in typed.text
    # The session never reaches the API: its cookie is for /ui only.
    assert client.get("/v1/projects/me").status_code == 401


def test_a_patterns_page_shows_evidence_sources_validations_and_relationships(
    served: Served,
) -> None:
    client, world, _ = served
    _sign_in(client, world.keys[A])
    retry = client.get(f"/ui/patterns/{world.patterns[A][RETRY]}")
    assert retry.status_code == 200
    page = retry.text
    assert "reconnect with delays of 1, 2, 4 seconds" in page  # evidence
    assert "https://github.com/acme/api/pull/100" in page  # its own source
    assert "https://github.com/acme/api/pull/102" in page  # the recurrence's source
    assert "recurrence" in page and "confirmed" in page
    assert RECONNECT_TEST in page and "depends on" in page  # the relationship in
    # Another project's pattern, or no pattern at all: 404, nothing revealed.
    for other in (world.patterns[B][B_TITLES[0]], "not-a-uuid"):
        missing = client.get(f"/ui/patterns/{other}")
        assert missing.status_code == 404 and B_TITLES[0] not in missing.text


def test_graph_data_is_the_projects_own(served: Served) -> None:
    client, world, _ = served
    assert client.get("/ui/graph.json").status_code == 401  # data endpoints do not redirect
    _sign_in(client, world.keys[A])
    graph = client.get("/ui/graph.json").json()
    assert {n["data"]["id"] for n in graph["nodes"]} == set(world.patterns[A].values())
    (only,) = graph["edges"]
    assert only["data"]["label"] == "depends_on"
    sizes = {n["data"]["label"]: n["data"]["size"] for n in graph["nodes"]}
    assert sizes[RETRY] > sizes[RECONNECT_TEST]  # confirmed twice: stronger, bigger
    assert 'id="graph"' in client.get("/ui/graph").text


def test_a_revoked_key_ends_its_sessions(served: Served) -> None:
    client, world, db = served
    _sign_in(client, world.keys[A])
    assert client.get("/ui/search").status_code == 200
    with db.session(ALL_PROJECTS) as s:
        (key,) = list_keys(s, A)
        assert revoke_key(s, key.id)
    gone = client.get("/ui/search")
    assert gone.status_code == 303 and gone.headers["location"].startswith("/ui/signin")


def test_the_operator_page_needs_the_admin_token(served: Served) -> None:
    client, world, _ = served
    _sign_in(client, world.keys[A])
    assert client.get("/ui/ops").headers["location"].startswith("/ui/signin")  # a project key
    signed = _sign_in(client, ADMIN)
    assert signed.headers["location"] == "/ui/ops"
    ops = client.get("/ui/ops")
    assert ops.status_code == 200
    parts = ("Today's Claude spend", "Queues", "Interactions by status", "extracted",
             "Error-fix suggestions", "<svg", "Per task type", "pattern extraction")  # fmt: skip
    for part in parts:
        assert part in ops.text, part
    assert "no broker configured" in ops.text
    # An operator session is not a project's: project pages ask to sign in.
    assert client.get("/ui/search").headers["location"].startswith("/ui/signin")


def test_operator_page_is_closed_without_an_admin_token(
    db: Database, embedder: Any, live_server: Serve
) -> None:
    settings = Settings(database_url=None, redis_url=None)  # type: ignore[call-arg]
    with live_server(create_app(settings, db=db, embedder=embedder)) as url, _client(url) as c:
        assert _sign_in(c, "").status_code == 401
        closed = c.get("/ui/ops")
        assert closed.status_code == 403 and "PATTERNS_ADMIN_TOKEN" in closed.text


def test_sign_in_returns_only_to_pages_of_the_explorer(served: Served) -> None:
    client, world, _ = served
    for evil in ("https://evil.example/ui/x", "//evil.example/ui", "/v1/costs", "/ui\\evil"):
        signed = _sign_in(client, world.keys[A], next=evil)
        assert signed.headers["location"] == "/ui/search", evil
    back = _sign_in(client, world.keys[A], next="/ui/graph")
    assert back.headers["location"] == "/ui/graph"


def test_pages_carry_a_strict_content_security_policy(served: Served) -> None:
    client, _, _ = served
    page = client.get("/ui/signin")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "connect-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script>" not in page.text  # no inline script anywhere
    assert client.get("/ui/static/ui.css").status_code == 200


def test_without_the_vendored_scripts_the_graph_says_how_to_install_them(
    db: Database, embedder: Any, live_server: Serve, tmp_path: Path
) -> None:
    settings = settings_for_tests(ui_vendor_dir=tmp_path)
    world = populate(db, embedder, settings)
    with live_server(create_app(settings, db=db, embedder=embedder)) as url, _client(url) as c:
        assert c.get("/ui/vendor/cytoscape.min.js").status_code == 404
        assert c.get("/ui/vendor/anything.js").status_code == 404
        _sign_in(c, world.keys[A])
        graph = c.get("/ui/graph").text
        assert "graph library is not installed" in graph and "make install" in graph
        assert "cytoscape.min.js" not in graph and "htmx.min.js" not in graph
        assert RETRY in c.get("/ui/search", params={"q": PARAPHRASE}).text  # plain forms work


def test_cross_site_form_posts_are_refused(served: Served) -> None:
    client, world, _ = served
    evil = {"Origin": "https://evil.example"}
    refused = client.post("/ui/signin", data={"key": world.keys[A]}, headers=evil)
    assert refused.status_code == 403 and "set-cookie" not in refused.headers
    same = {"Origin": str(client.base_url)}
    assert client.post("/ui/signin", data={"key": world.keys[A]}, headers=same).status_code == 303
    assert client.post("/ui/signout", headers=evil).status_code == 403
    assert client.get("/ui/search").status_code == 200  # still signed in
    assert client.post("/ui/signout", headers=same).status_code == 303
    assert client.get("/ui/search").status_code == 303


def test_the_cookie_can_be_marked_secure(db: Database, live_server: Serve) -> None:
    settings = settings_for_tests(ui_cookie_secure=True)
    with db.session(ALL_PROJECTS) as s:
        _, key = create_api_key(s, A, "secure cookie")
    with live_server(create_app(settings, db=db)) as url, _client(url) as c:
        cookie = _sign_in(c, key).headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=lax" in cookie
