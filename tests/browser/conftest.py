"""Fixtures of the browser tests: Debian's Chromium driven by Playwright (never a downloaded
browser), the explorer on a real uvicorn on loopback over the embedded Postgres and the real
MiniLM, and a page whose every request is recorded: anything not addressed to 127.0.0.1 is
aborted and fails the test.

Screenshots go to ``PATTERNS_TEST_SHOTS`` (default ``/tmp/ui-shots``), outside the checkout.
"""

from __future__ import annotations

import os
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from support.asgi_server import serve_asgi
from support.explorer_world import Explorer, populate, settings_for_tests

from pipeline.api.app import create_app
from pipeline.db.engine import Database

CHROMIUM = Path(os.environ.get("PATTERNS_TEST_CHROMIUM", "/usr/bin/chromium"))
#: Flags of a quiet, offline headless Chromium (no background fetches of its own).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--no-first-run", "--disable-quic", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SHOTS = Path(os.environ.get("PATTERNS_TEST_SHOTS", "/tmp/ui-shots"))
#: Milliseconds a wait on the page may take before the test fails.
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium (``/usr/bin/chromium``, Debian's package) under Playwright."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: apt-get install chromium (.ci/run does)")
    playwright_api = pytest.importorskip("playwright.sync_api")
    playwright_api.expect.set_options(timeout=WAIT_MS)
    with playwright_api.sync_playwright() as pw:
        chromium = pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture()
def explorer(db: Database, embedder: Any) -> Iterator[Explorer]:
    """The API (explorer at ``/ui``) on loopback over a populated database."""
    settings = settings_for_tests()
    world = populate(db, embedder, settings)
    app = create_app(settings, db=db, embedder=embedder)
    with serve_asgi(app) as url:
        _wait_until_listening(app.state.pipeline)
        yield Explorer(url, world, db, settings, embedder)


def _wait_until_listening(state: Any, timeout_s: float = 30) -> None:
    """Until the live feed's LISTEN connection is up (else a NOTIFY could go unheard and a feed
    test would wait for the slow poll)."""
    deadline = time.monotonic() + timeout_s
    while state.feed is None or not state.feed.listening.is_set():
        if time.monotonic() > deadline:
            raise RuntimeError("the live feed did not start listening")
        time.sleep(0.01)


@dataclass
class Traffic:
    """Every request the page made, those aborted for leaving loopback, and page errors."""

    urls: list[str] = field(default_factory=list)
    blocked: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _loopback(url: str) -> bool:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme in ("http", "https", "ws") and parts.hostname == "127.0.0.1"


@pytest.fixture()
def traffic() -> Traffic:
    """What the page fixtures record; checked after each test."""
    return Traffic()


@pytest.fixture()
def new_page(browser: Any, traffic: Traffic) -> Iterator[Any]:
    """``new_page(width=1280, height=900)``: a page in a fresh context (no cookies), whose
    requests are recorded; requests off loopback are aborted. After the test, every request
    must have gone to 127.0.0.1 and no script error or policy violation may have happened."""
    contexts = []

    def make(width: int = 1280, height: int = 900) -> Any:
        context = browser.new_context(viewport={"width": width, "height": height})
        contexts.append(context)

        def guard(route: Any) -> None:
            if _loopback(route.request.url):
                route.continue_()
            else:
                traffic.blocked.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        context.on("request", lambda request: traffic.urls.append(request.url))
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        page.on("pageerror", lambda exc: traffic.errors.append(f"pageerror: {exc}"))
        page.on("console", lambda msg: _console(traffic, msg))
        return page

    yield make
    for context in contexts:
        context.close()
    assert traffic.urls, "the page made no request at all"
    assert not traffic.blocked, f"requests left loopback: {traffic.blocked}"
    assert all(_loopback(u) for u in traffic.urls), traffic.urls
    assert not traffic.errors, traffic.errors


def _console(traffic: Traffic, msg: Any) -> None:
    """Script errors and policy violations count; a refused sign-in's 401 is expected."""
    if msg.type == "error" and "status of 401" not in msg.text:
        traffic.errors.append(f"console: {msg.text}")


@pytest.fixture(scope="session")
def shot() -> Any:
    """``shot(page, name)``: a full-page screenshot to ``SHOTS/name.png``."""
    SHOTS.mkdir(parents=True, exist_ok=True)

    def take(page: Any, name: str) -> Path:
        path = SHOTS / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
