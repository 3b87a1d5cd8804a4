"""Render the fault scenarios' results as the Markdown table of ``docs/RELIABILITY.md``.

Usage::

    PATTERNS_TEST_FAULT_RESULTS=/tmp/faults.jsonl .venv/bin/pytest -m fault
    .venv/bin/python bench/reliability_table.py /tmp/faults.jsonl

Each line of the input is one scenario's row, written by ``tests/support/faults.py:record``
(the last row of a scenario wins when it ran more than once).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

COLUMNS = (
    ("Scenario", "scenario"), ("Load", "load"), ("Faults injected", "faults"),
    ("Items in", "items_in"), ("Items out (extracted / failed / dead)", "out"),
    ("Duplicates", "duplicates"), ("Lost", "lost"), ("Leases / reservations left", "left"),
    ("Overspend", "overspend"), ("p99 stored → done", "p99"), ("How to rerun", "rerun"),
)  # fmt: skip


def cells(row: dict[str, Any]) -> dict[str, str]:
    """The printed cells of one result row."""
    cap = row.get("cap_usd")
    return {
        **{k: str(v) for k, v in row.items()},
        "out": f"{row['extracted']} / {row['failed']} / {row['dead']}",
        "left": f"{row['leases_left']} / {row['reservations_open']}",
        "overspend": (
            "no cap"
            if cap is None
            else f"${row['overspend_usd']:.4f} (spent ${row['spent_usd']:.4f} of ${cap:.2f})"
        ),
        "p99": "-" if row.get("p99_s") is None else f"{row['p99_s']:.1f} s",
        "rerun": f"`{row['rerun']}`",
    }


def table(rows: list[dict[str, Any]]) -> str:
    """A Markdown table, one line per scenario (the last row recorded for each)."""
    latest = {row["scenario"]: row for row in rows}
    lines = [
        "| " + " | ".join(title for title, _ in COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    for row in latest.values():
        shown = cells(row)
        lines.append("| " + " | ".join(shown[key] for _, key in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    """Print the table of the results file ``argv[1]``."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    rows = [json.loads(line) for line in Path(argv[1]).read_text().splitlines() if line.strip()]
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
