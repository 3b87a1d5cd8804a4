"""The feedback comment's Markdown with hostile pattern titles, types, project names, source
URLs and delivery ids: rendered as CommonMark with raw HTML allowed and GFM tables (what GitHub
does, short of its sanitiser), nothing they carry becomes markup, a link or a mention."""

from __future__ import annotations

import re
import uuid

import pytest

from pipeline.github.feedback import (
    SimilarPattern,
    escape_markdown,
    feedback_marker,
    render_comment,
    safe_link,
)

markdown_it = pytest.importorskip("markdown_it")

HOSTILE_TITLES = [
    "</details><img src=x onerror=alert(1)>",
    "<script>alert(1)</script>",
    "ping @someone and @org/team please",
    "[link](javascript:alert(1))",
    "![img](https://evil.example/x.png)",
    "a | b | c",
    "line one\nline two\r\n| --- | --- |",
    "**bold** _it_ `code` ~~gone~~ # heading",
    "fixes #123 and GH-7, see https://evil.example/path",
    "&lt;img src=x&gt; &amp; &#60;b&#62;",
    "back\\slash \\[x\\]",
    "<!-- hidden --> -->",
]


def _html(markdown: str) -> str:
    md = markdown_it.MarkdownIt("commonmark", {"html": True}).enable("table")
    return str(md.render(markdown))


def _similar(title: str, url: str | None = "https://github.com/o/r/pull/1") -> SimilarPattern:
    return SimilarPattern(uuid.uuid4(), title, "solution", 0.9, url)


@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_a_hostile_title_stays_text(title: str) -> None:
    body = render_comment("d-1", "o/r", [_similar(title)])
    html = _html(body)
    # The only tags are the marker, the heading, the table and our own link.
    tags = set(re.findall(r"</?([a-zA-Z]+)", html))
    assert tags <= {"p", "strong", "em", "table", "thead", "tbody", "tr", "th", "td", "a"}, html
    assert html.count("<a ") == 1 and 'href="https://github.com/o/r/pull/1"' in html
    assert html.count("<!--") == 1 and html.count("-->") == 1  # the marker only
    assert html.count("<tr>") == 2 and html.count("<td>") == 4  # header row + one row of 4 cells
    assert not re.search(r"[@#][A-Za-z0-9]", html)  # no mention, team or issue reference
    assert 'href="javascript' not in html


def test_the_title_still_reads_as_written() -> None:
    """Escaping is for Markdown only: the rendered text is the title (whitespace folded, the
    zero-width space after ``@``/``#`` aside)."""
    title = "Use `retry()` with <backoff> & jitter | @alice #12 [x](y) 50%*"
    html = _html(render_comment("d-1", "o/r", [_similar(title)]))
    cell = re.search(r"<tbody>\s*<tr>\s*<td>(.*?)</td>", html, re.S)
    assert cell is not None
    text = cell.group(1).replace("\u200b", "")
    assert text == "Use `retry()` with &lt;backoff&gt; &amp; jitter | @alice #12 [x](y) 50%*"


def test_escape_folds_whitespace_and_caps_length() -> None:
    assert escape_markdown("a\n\tb   c") == "a b c"
    long = escape_markdown("x" * 5000)
    assert len(long) < 400 and long.endswith("…")


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox",
        "//evil.example/x",
        "https://",
        "not a url",
        "",
    ],
)
def test_only_http_urls_become_links(url: str) -> None:
    assert safe_link(url) is None
    html = _html(render_comment("d-1", "o/r", [_similar("t", url)]))
    assert "<a " not in html


def test_a_link_cannot_break_out_of_its_destination() -> None:
    url = "https://x.example/a) [evil](javascript:alert(1) <img src=x> | `c` @bob"
    link = safe_link(url)
    assert link is not None and not re.search(r"[\s()<>|`\[\]\\]", link)
    html = _html(render_comment("d-1", "o/r", [_similar("t", url)]))
    assert html.count("<a ") == 1 and "<img" not in html and html.count("<td>") == 4
    assert safe_link("https://github.com/o/r/pull/1") == "https://github.com/o/r/pull/1"


def test_project_and_type_are_escaped_too() -> None:
    hostile = SimilarPattern(uuid.uuid4(), "t", "<b>x</b> @eve", 0.5, None)
    html = _html(render_comment("d-1", "o/r<img src=x> @eve", [hostile]))
    assert "<img" not in html and "<b>" not in html and "@eve" not in html


def test_the_marker_cannot_be_closed_by_a_delivery_id() -> None:
    """The hidden marker holds the delivery id percent-encoded: one that holds ``-->`` cannot end
    the HTML comment early, and distinct ids keep distinct markers."""
    marker = feedback_marker("x --><img src=x onerror=alert(1)>")
    assert marker.startswith("<!-- ") and marker.endswith(" -->") and marker.count(">") == 1
    html = _html(render_comment("x --><img src=x>", "o/r", [_similar("t")]))
    assert "<img" not in html
    guid = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert feedback_marker(guid) == f"<!-- pattern-pipeline:feedback delivery={guid} -->"
    assert feedback_marker("a b") != feedback_marker("a%20b")
