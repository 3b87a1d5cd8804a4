"""A profile of the store's per-interaction work at the smallest and the largest store of
``bench/store_scaling.py`` (goal: the cost per interaction does not grow with the store).

At each size (the scaling bench's first and last) the store is filled as that bench fills it,
one round of K interactions runs unprofiled (warm-up), then the bench's first round runs under
pyinstrument with every SQL statement timed (SQLAlchemy's cursor events, client side: the round
trip included). Writes ``docs/profile-scaling.txt``: each size's parts (write, embed + merge,
search, ms per interaction), the statements by their time per interaction at each size with the
ratio (what grows), and the two call trees. Wall time against the profiler's CPU time shows how
much of it is waiting on Postgres.
Usage: ``python bench/profile_scaling.py [K] [--out PATH]`` (default 40).
"""

from __future__ import annotations

import re
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from benchlib import REPO, scratch_database
from store_fixtures import project_id, store_interactions
from store_scaling import PROJECT, SIZES, _grow, _round

OUT = REPO / "docs" / "profile-scaling.txt"
#: Statements shown in the table (the largest at the biggest store first).
TOP = 40


class StatementClock:
    """Per statement (its first 110 characters, whitespace collapsed): calls and seconds."""

    def __init__(self, engine: Any) -> None:
        from sqlalchemy import event

        self.on = False
        self.seconds: dict[str, list[float]] = defaultdict(lambda: [0, 0.0])
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        conn.info["statement_started"] = time.perf_counter()

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.on:
            entry = self.seconds[re.sub(r"\s+", " ", statement)[:110]]
            entry[0] += 1
            entry[1] += time.perf_counter() - conn.info["statement_started"]


def _profiled_round(
    db: Any, settings: Any, clock: StatementClock, k: int, n: int, stored: np.ndarray
) -> tuple[dict[str, Any], dict[str, list[float]], str]:
    """A warm-up round, then a profiled one: its parts, its statements and its call tree."""
    from pyinstrument import Profiler

    _round(db, settings, k, n, stored, 2)
    clock.seconds.clear()
    clock.on = True
    profiler = Profiler(interval=0.001)
    profiler.start()
    # Round 0 is the scaling bench's round with the most merges (its fresh vectors share a
    # seed with the store's newest, so some of them are twins too).
    parts = _round(db, settings, k, n, stored, 0)
    profiler.stop()
    clock.on = False
    session = profiler.last_session
    head = (
        f"## store of {n:,} patterns, {k} interactions: write {parts['write']:.2f}, embed + merge "
        f"{parts['embed_merge']:.2f}, search {parts['search']:.2f} ms per interaction "
        f"({parts['merges']} merges); wall {session.duration:.2f} s, "
        f"Python CPU {session.cpu_time:.2f} s\n"
    )
    tree = profiler.output_text(unicode=False, color=False)
    return parts, dict(clock.seconds), head + tree


def statement_table(k: int, small: dict[str, list[float]], large: dict[str, list[float]]) -> str:
    """The statements by milliseconds per interaction at the largest store, against the
    smallest (``k`` interactions a round): what grows with the store."""
    lines = [
        f"{'small':>7} {'large':>7} {'ratio':>6} {'calls':>11}  statement",
        f"{'ms':>7} {'ms':>7} {'':>6} {'small/large':>11}",
    ]
    order = sorted(large, key=lambda s: -large[s][1])[:TOP]
    for statement in order:
        calls_l, sec_l = large[statement]
        calls_s, sec_s = small.get(statement, [0, 0.0])
        ms_s, ms_l = sec_s * 1000 / k, sec_l * 1000 / k
        ratio = f"{ms_l / ms_s:6.2f}" if ms_s else "     -"
        lines.append(
            f"{ms_s:7.3f} {ms_l:7.3f} {ratio} {int(calls_s):>5}/{int(calls_l):<5}  {statement}"
        )
    total_s = sum(v[1] for v in small.values()) * 1000 / k
    total_l = sum(v[1] for v in large.values()) * 1000 / k
    lines.append(f"{total_s:7.3f} {total_l:7.3f} {total_l / total_s:6.2f} {'':>11}  all statements")
    return "\n".join(lines) + "\n"


def main() -> None:
    """Profile a round at the smallest and the largest store; write the report."""
    from pipeline.db.engine import Database
    from pipeline.settings import Settings

    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    out = Path(sys.argv[sys.argv.index("--out") + 1]) if "--out" in sys.argv else OUT
    if "--out" in sys.argv:
        args.remove(str(out))
    k = int(args[0]) if args else 40
    settings = Settings(database_url=None, redis_url=None)
    sizes = (SIZES[0], SIZES[-1])
    trees, statements, parts = [], [], []
    with scratch_database("pt-profile-scaling-") as url:
        db = Database.from_url(url)
        clock = StatementClock(db.engine)
        store_interactions(db, PROJECT, 1, "seed")
        project = project_id(db, PROJECT)
        have, stored = 0, np.zeros((0, 384), dtype=np.float32)
        for n in sizes:
            stored = np.concatenate([stored, _grow(url, project, have, n)])
            have = n
            p, s, tree = _profiled_round(db, settings, clock, k, n, stored)
            parts.append(p)
            statements.append(s)
            trees.append(tree)
        db.dispose()
    total = [p["write"] + p["embed_merge"] + p["search"] for p in parts]
    header = (
        f"# store per-interaction cost, stores of {sizes[0]:,} and {sizes[1]:,} patterns, "
        f"{k} interactions each (python bench/profile_scaling.py)\n"
        f"# total {total[0]:.2f} -> {total[1]:.2f} ms per interaction "
        f"(growth {total[1] / total[0]:.2f}); "
        + ", ".join(
            f"{key} {parts[0][key]:.2f} -> {parts[1][key]:.2f}"
            for key in ("write", "embed_merge", "search")
        )
        + "\n\n# SQL statements, client-side time per interaction (round trip included)\n"
    )
    text = header + statement_table(k, *statements) + "\n" + "\n".join(trees)
    out.write_text(text)
    print(header + f"written: {out}")


if __name__ == "__main__":
    main()
