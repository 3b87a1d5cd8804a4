"""How the store learns, measured on a database a ``patterns run`` filled.

Two reports (``python bench/store_learning.py [curve|pairs] [--bins 0.05,0.10,...]``; the
database is ``DATABASE_URL``, else the embedded one in ``PATTERNS_DATA_DIR``):

- ``curve``: interactions in arrival order, in windows of 50: new active patterns per extracted
  interaction in each window, and overall. A store that learns adds fewer new patterns per
  interaction as it fills up, since later sightings of an idea merge into the first.
- ``pairs``: for every pattern, its nearest pattern of the same project and type from another
  interaction (cosine distance, exact scan), bucketed by distance, with sample pairs per bucket to
  judge by eye whether they are one idea: how the merge threshold was chosen
  (``PATTERNS_MERGE_MAX_DISTANCE``). Every sighting counts, merged ones included (a merged
  pattern keeps its row and embedding), and pairs with equal normalised titles are left out (those
  merge by title, whatever their distance): so one run with merges on serves both reports.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
from typing import Any

from sqlalchemy import text


def _db() -> Any:
    from pipeline.db.engine import Database
    from pipeline.settings import Settings

    return Database.connect(Settings())


def curve(window: int = 50) -> dict[str, Any]:
    """New active patterns (not merged into a twin) per extracted interaction, per window of
    ``window`` interactions in id order."""
    from pipeline.db.engine import ALL_PROJECTS

    db = _db()
    with db.session(ALL_PROJECTS) as s:
        rows = s.execute(
            text(
                "SELECT i.id, i.status, count(p.id) FILTER (WHERE v.id IS NULL) AS new, "
                "count(p.id) AS sightings "
                "FROM interactions i LEFT JOIN patterns p ON p.source_interaction_id = i.id "
                "LEFT JOIN pattern_validations v ON v.validating_pattern_id = p.id "
                "AND v.validation_type = 'merge' GROUP BY i.id, i.status ORDER BY i.id"
            )
        ).all()
    db.dispose()
    points = []
    for start in range(0, len(rows), window):
        chunk = [r for r in rows[start : start + window] if r.status == "extracted"]
        if chunk:
            points.append({
                "interactions": f"{start + 1}-{start + len(rows[start:start + window])}",
                "extracted": len(chunk),
                "sightings_per_interaction": round(sum(r.sightings for r in chunk) / len(chunk), 3),
                "new_patterns_per_interaction": round(sum(r.new for r in chunk) / len(chunk), 3),
            })  # fmt: skip
    extracted = [r for r in rows if r.status == "extracted"]
    return {
        "interactions": len(rows),
        "extracted": len(extracted),
        "sightings": sum(r.sightings for r in extracted),
        "new_patterns": sum(r.new for r in extracted),
        "windows": points,
    }


def pairs(
    bins: list[float], samples: int = 6, seed: int = 0, mergeable: bool = False
) -> dict[str, Any]:
    """Nearest same-project, same-type neighbour of every embedded sighting (active or merged),
    from another interaction and with another normalised title, bucketed by cosine distance,
    with sample pairs per bucket (``samples`` 0: all). ``mergeable``: only pairs whose titles
    name the same identifiers (the others never merge on distance:
    :func:`pipeline.store.lifecycle.may_merge_by_embedding`)."""
    from pipeline.db.engine import ALL_PROJECTS
    from pipeline.store.lifecycle import may_merge_by_embedding

    db = _db()
    with db.session(ALL_PROJECTS) as s:
        rows = s.execute(
            text(
                "SELECT p.title, p.type, near.title AS other, near.d FROM patterns p "
                "CROSS JOIN LATERAL (SELECT q.title, p.embedding <=> q.embedding AS d "
                "  FROM patterns q WHERE q.project_id = p.project_id AND q.type = p.type "
                "  AND q.id <> p.id AND q.embedding IS NOT NULL "
                "  AND q.normalized_title <> p.normalized_title "
                "  AND q.source_interaction_id IS DISTINCT FROM p.source_interaction_id "
                "  ORDER BY p.embedding <=> q.embedding LIMIT 1) near "
                "WHERE p.embedding IS NOT NULL"
            )
        ).all()
    db.dispose()
    if mergeable:
        rows = [r for r in rows if may_merge_by_embedding(r.title, r.other)]
    rng = random.Random(seed)
    edges = [0.0, *bins, 2.0]
    buckets = []
    for low, high in itertools.pairwise(edges):
        inside = [r for r in rows if low <= float(r.d) < high]
        shown = rng.sample(inside, min(samples, len(inside))) if samples else inside
        buckets.append({
            "distance": f"[{low:.2f}, {high:.2f})", "patterns": len(inside),
            "samples": [f"{r.d:.3f} {r.type}: {r.title!r} ~ {r.other!r}" for r in shown],
        })  # fmt: skip
    return {"patterns": len(rows), "buckets": buckets}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", choices=["curve", "pairs"])
    parser.add_argument("--bins", default="0.05,0.10,0.15,0.20,0.25,0.30,0.40")
    parser.add_argument("--samples", type=int, default=6)
    parser.add_argument("--window", type=int, default=50)
    parser.add_argument("--mergeable", action="store_true", help="Only guard-passing pairs.")
    args = parser.parse_args()
    if args.report == "curve":
        out = curve(args.window)
    else:
        out = pairs([float(b) for b in args.bins.split(",")], args.samples, 0, args.mergeable)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
