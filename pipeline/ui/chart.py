"""The operator page's chart, drawn server-side as inline SVG (no chart library, no script):
patterns created per day (bars) above Claude spend per day against the daily cap (a line and a
dashed line), as ``patterns report --png`` draws it. The SVG scales with its container
(``viewBox``) and carries a title and description for screen readers; the page lists the same
figures in a table.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup

from pipeline.ops.report import DayStats

WIDTH, PANEL, GAP, LEFT, RIGHT, TOP = 640, 110, 46, 52, 12, 22


def _y(value: float, top: float, scale: float) -> float:
    """The y of ``value`` in a panel starting at ``top`` whose maximum is ``scale``."""
    return top + PANEL - (value / scale * PANEL if scale > 0 else 0)


def _axis(top: float, label: str, maximum: str) -> list[str]:
    return [
        f'<line class="axis" x1="{LEFT}" y1="{top + PANEL}" x2="{WIDTH - RIGHT}" '
        f'y2="{top + PANEL}"/>',
        f'<text class="label" x="{LEFT - 6}" y="{top + 4}" text-anchor="end">'
        f"{escape(maximum)}</text>",
        f'<text class="label" x="{LEFT - 6}" y="{top + PANEL}" text-anchor="end">0</text>',
        f'<text class="title" x="{LEFT}" y="{top - 8}">{escape(label)}</text>',
    ]


def daily_chart(days: Sequence[DayStats]) -> Markup:
    """An SVG of ``days`` (oldest first): patterns created, then Claude spend and cap."""
    n = max(1, len(days))
    step = (WIDTH - LEFT - RIGHT) / n
    x = [LEFT + step * (i + 0.5) for i in range(n)]
    created = [d.patterns_created for d in days]
    spent = [float(d.claude_spent_usd) for d in days]
    caps = [float(d.claude_cap_usd) for d in days]
    top1, top2 = TOP, TOP + PANEL + GAP
    most = max([*created, 1])
    money = max([*spent, *caps, 0.01])
    height = top2 + PANEL + 30
    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" role="img" '
        'aria-labelledby="chart-title chart-desc" xmlns="http://www.w3.org/2000/svg">',
        '<title id="chart-title">Patterns created and Claude spend per day</title>',
        f'<desc id="chart-desc">{n} UTC days: patterns created per day (bars, at most {most}); '
        f"Claude spend per day (line) against the daily cap (dashed line).</desc>",
        *_axis(top1, "patterns created per day", str(most)),
        *_axis(top2, "Claude spend per day (USD) and cap (dashed)", f"{money:.2f}"),
    ]
    width = max(2.0, step * 0.6)
    for xi, value, day in zip(x, created, days, strict=False):
        y = _y(value, top1, most)
        parts.append(
            f'<rect class="bar" x="{xi - width / 2:.1f}" y="{y:.1f}" width="{width:.1f}" '
            f'height="{top1 + PANEL - y:.1f}"><title>{day.day}: {value} patterns</title></rect>'
        )
    for values, cls in ((caps, "cap"), (spent, "spent")):
        points = " ".join(
            f"{xi:.1f},{_y(v, top2, money):.1f}" for xi, v in zip(x, values, strict=False)
        )
        parts.append(f'<polyline class="{cls}" points="{points}"/>')
    for xi, usd, day in zip(x, spent, days, strict=False):
        parts.append(
            f'<circle class="spent-dot" cx="{xi:.1f}" cy="{_y(usd, top2, money):.1f}" r="3">'
            f"<title>{day.day}: ${usd:.4f} of ${float(day.claude_cap_usd):.2f}</title></circle>"
        )
    for i in (0, n - 1) if days else ():
        parts.append(
            f'<text class="label" x="{x[i]:.1f}" y="{height - 8}" text-anchor="middle">'
            f"{days[i].day:%m-%d}</text>"
        )
    parts.append("</svg>")
    # Every interpolated value is numeric, a date or escaped.
    return Markup("\n".join(parts))
