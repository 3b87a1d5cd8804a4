"""The explorer in real headless Chromium: a wrong key refused, signing in, searching a
paraphrase and finding the pattern, opening it, the graph drawn by Cytoscape.js, a new pattern
arriving in the live feed after a POST and its extraction, the operator page, and the pages at
phone width. Every request the browser makes must go to 127.0.0.1 (the ``new_page`` fixture),
and every wait is on a condition of the page. Screenshots: /tmp/ui-shots/."""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from support.asgi_server import serve_asgi
from support.explorer_world import (
    ADMIN,
    B_TITLES,
    PARAPHRASE,
    RECONNECT_TEST,
    RETRY,
    A,
    Explorer,
    extract,
    populate,
    settings_for_tests,
)
from support.replay_llm import pattern

from pipeline.api.app import create_app
from pipeline.db.engine import ALL_PROJECTS, Database
from pipeline.db.models import BudgetDay

pytestmark = [pytest.mark.browser, pytest.mark.integration]

BREAKER = "Open a circuit breaker after repeated broker failures"


def _sign_in(page: Any, explorer: Explorer, key: str) -> None:
    page.goto(f"{explorer.url}/ui/")
    expect(page).to_have_url(re.compile(r"/ui/signin"))
    page.get_by_label("API key or admin token").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_a_wrong_key_is_refused(explorer: Explorer, new_page: Any, shot: Any) -> None:
    page = new_page()
    page.goto(f"{explorer.url}/ui/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    shot(page, "01-signin")
    _sign_in(page, explorer, "pp_this-is-not-a-key")
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("not valid")
    expect(page.get_by_label("API key or admin token")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_role("navigation", name="Main")).to_have_count(0)
    shot(page, "02-signin-refused")
    assert not [c for c in page.context.cookies() if c["name"] == "patterns_ui"]


def test_sign_in_search_a_paraphrase_open_it_and_see_the_graph(
    explorer: Explorer, new_page: Any, shot: Any
) -> None:
    page = new_page()
    _sign_in(page, explorer, explorer.world.keys[A])
    expect(page).to_have_url(re.compile(r"/ui/search$"))
    expect(page.get_by_role("heading", name=f"Patterns of {A}")).to_be_visible()
    page.get_by_label("Search patterns").fill(PARAPHRASE)
    page.get_by_label("Search patterns").press("Enter")
    results = page.locator("#results ol.results > li")
    expect(page.locator("#result-count")).to_contain_text(PARAPHRASE)
    expect(results.first.get_by_role("heading")).to_have_text(RETRY)
    source = results.first.get_by_role("link", name="pull request 100")
    expect(source).to_have_attribute("href", "https://github.com/acme/api/pull/100")
    expect(page).to_have_url(re.compile(r"q=reconnect"))  # htmx pushed the search's URL
    stored = page.evaluate("() => JSON.stringify(Object.values(localStorage))")
    assert RETRY not in stored  # htmx keeps no copy of the pages in the browser
    for title in B_TITLES:
        expect(page.get_by_text(title)).to_have_count(0)
    shot(page, "03-search-results")

    page.get_by_role("link", name=RETRY).first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(RETRY)
    expect(page.locator("blockquote.evidence")).to_contain_text("1, 2, 4 seconds")
    expect(page.locator('a[href="https://github.com/acme/api/pull/102"]')).to_be_visible()
    expect(page.get_by_role("cell", name="recurrence")).to_be_visible()
    expect(page.get_by_role("link", name=RECONNECT_TEST)).to_be_visible()
    shot(page, "04-pattern")

    page.get_by_role("link", name="Graph").click()
    graph = page.locator("#graph")
    expect(graph).to_have_attribute("data-rendered", "2")
    expect(graph.locator("canvas").first).to_be_attached()
    nodes = page.evaluate("() => window.patternGraph.nodes().map((n) => n.data('label')).sort()")
    assert nodes == sorted([RETRY, RECONNECT_TEST])
    assert page.evaluate("() => window.patternGraph.edges().length") == 1
    overlap = """() => {
      const [a, b] = window.patternGraph.nodes().map((n) => n.boundingBox({includeLabels: false}));
      return a.x1 < b.x2 && b.x1 < a.x2 && a.y1 < b.y2 && b.y1 < a.y2;
    }"""
    assert not page.evaluate(overlap), "the layout put the nodes on top of each other"
    expect(page.locator("#graph-list")).to_contain_text("2 patterns")
    shot(page, "05-graph")


def test_a_new_pattern_appears_in_the_live_feed(
    explorer: Explorer, new_page: Any, shot: Any
) -> None:
    page = new_page()
    _sign_in(page, explorer, explorer.world.keys[A])
    page.get_by_role("link", name="Live feed").click()
    expect(page.locator("#feed-state")).to_have_attribute("data-state", "live")
    key = explorer.world.keys[A]
    posted = httpx.post(
        f"{explorer.url}/v1/interactions", headers={"Authorization": f"Bearer {key}"},
        json={"content": "A PR 9: breaker", "kind": "pull_request"}, timeout=30,
    )  # fmt: skip
    assert posted.status_code == 202, posted.text
    interaction_id = posted.json()["id"]
    feed = page.locator("#feed > li")
    expect(feed.first).to_contain_text(f"interaction {interaction_id}")
    # The worker's part, in process: extraction stores the pattern, whose event is NOTIFYed.
    extract(explorer.db, explorer.embedder, explorer.settings, [interaction_id],
            {"A PR 9": {"patterns": [pattern(BREAKER)], "relationships": []}})  # fmt: skip
    expect(feed.first).to_contain_text(BREAKER)
    expect(feed.first).to_contain_text("pattern.created")
    shot(page, "06-feed")
    feed.first.get_by_role("link", name=BREAKER).click()
    expect(page.get_by_role("heading", level=1)).to_have_text(BREAKER)


def _spend(explorer: Explorer, days_ago: int, usd: str) -> None:
    """Claude spend recorded ``days_ago`` (UTC), as settled calls leave it."""
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days_ago)
    with explorer.db.session(ALL_PROJECTS) as s:
        s.add(BudgetDay(day=day, provider="claude", cap_usd=Decimal(50), spent_usd=Decimal(usd)))


def test_the_operator_page(explorer: Explorer, new_page: Any, shot: Any) -> None:
    for days_ago, usd in ((0, "12.50"), (1, "31.20"), (3, "8.75")):
        _spend(explorer, days_ago, usd)
    page = new_page()
    _sign_in(page, explorer, ADMIN)
    expect(page).to_have_url(re.compile(r"/ui/ops$"))
    for heading in ("Today's Claude spend", "Queues", "Interactions by status",
                    "Error-fix suggestions", "Per day", "Extraction quality"):  # fmt: skip
        expect(page.get_by_role("heading", name=heading)).to_be_visible()
    expect(page.locator("p.big").first).to_contain_text("$12.50 of $50.00")
    expect(page.get_by_role("meter", name="Budget used (spent and reserved)")).to_have_attribute(
        "value", "0.25"
    )
    expect(page.locator("svg.chart rect.bar")).to_have_count(14)
    chart = page.get_by_role("img", name="Patterns created and Claude spend per day")
    expect(chart).to_be_visible()
    shot(page, "07-ops")


def test_pages_at_phone_width(explorer: Explorer, new_page: Any, shot: Any) -> None:
    page = new_page(width=390, height=844)
    _sign_in(page, explorer, explorer.world.keys[A])
    page.get_by_label("Search patterns").fill(PARAPHRASE)
    page.get_by_role("button", name="Search").click()
    expect(page.locator("#result-count")).to_contain_text(PARAPHRASE)
    first = page.locator("#results ol.results > li").first
    expect(first.get_by_role("heading")).to_have_text(RETRY)
    fits = "() => document.documentElement.scrollWidth <= window.innerWidth"
    assert page.evaluate(fits), "the search page scrolls sideways at phone width"
    shot(page, "08-phone-search")
    page.get_by_role("link", name=RETRY).first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(RETRY)
    assert page.evaluate(fits), "the pattern page scrolls sideways at phone width"
    shot(page, "09-phone-pattern")
    page.get_by_role("link", name="Graph").click()
    expect(page.locator("#graph")).to_have_attribute("data-rendered", "2")
    assert page.evaluate(fits), "the graph page scrolls sideways at phone width"
    shot(page, "10-phone-graph")
    # Keyboard: the skip link is the first stop and moves focus to the content.
    page.keyboard.press("Tab")
    expect(page.get_by_role("link", name="Skip to content")).to_be_focused()
    page.keyboard.press("Enter")
    expect(page.locator("main")).to_be_focused()


def test_without_the_vendored_scripts_the_pages_still_work(
    db: Database, embedder: Any, new_page: Any, shot: Any, tmp_path: Path
) -> None:
    """No htmx, no Cytoscape.js (npm missing at install): search is a plain form, and the
    graph's place says how to install the library while the list still shows the graph."""
    settings = settings_for_tests(ui_vendor_dir=tmp_path)
    world = populate(db, embedder, settings)
    with serve_asgi(create_app(settings, db=db, embedder=embedder)) as url:
        explorer = Explorer(url, world, db, settings, embedder)
        page = new_page()
        _sign_in(page, explorer, world.keys[A])
        page.get_by_label("Search patterns").fill(PARAPHRASE)
        page.get_by_role("button", name="Search").click()
        expect(page).to_have_url(re.compile(r"q=reconnect"))
        expect(page.locator("#result-count")).to_contain_text(PARAPHRASE)
        expect(page.locator("#results ol.results > li").first.get_by_role("heading")).to_have_text(
            RETRY
        )
        page.get_by_role("link", name="Graph").click()
        expect(page.get_by_role("note")).to_contain_text("graph library is not installed")
        expect(page.locator("#graph-list")).to_contain_text("2 patterns")
        assert page.evaluate("() => typeof window.cytoscape") == "undefined"
        shot(page, "11-graph-without-library")
