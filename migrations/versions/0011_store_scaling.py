"""The store's per-interaction cost stops growing with its size (docs/PERFORMANCE.md, "Scaling").

- ``ix_patterns_active_normalized_title`` on ``(project_id, normalized_title)`` over active
  patterns: relationship resolution looks up the project's earlier patterns by normalised title
  without knowing their type (``pipeline.extract.relationships.project_titles``), which the
  unique index on ``(project_id, type, normalized_title)`` cannot serve before PostgreSQL 18's
  skip scan (compose runs 17): it was a scan of the project's patterns.
- ``patterns`` gets ``fillfactor = 80``: a pattern row with its 384-d vector is about 1.8 kB, so
  a full page holds four and has no room for a fifth version; every ``usage_count`` increment
  (each search hit) or count refresh (each merge) then wrote the row's new version elsewhere and
  inserted it into every index of the table, the HNSW graph included (about 0.75 ms a row at
  20,000 patterns, growing with the graph). With a fifth of each page kept free, such updates
  of unindexed columns are HOT (heap-only: same page, no index entries). It applies to pages
  written from now on; an existing store gains it page by page, or at once with
  ``VACUUM FULL patterns`` (which rebuilds the indexes; a maintenance window).
- ``usage_count`` of active patterns is recounted once from ``pattern_usage``: the search now
  increments it (``pipeline.store.usage``) instead of recounting every hit's rows, and a recount
  by concurrent searches could undercount (each statement counted without the other's
  uncommitted row).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

#: Share of each ``patterns`` heap page filled by inserts (PostgreSQL's ``fillfactor``, percent).
FILLFACTOR = 80


def upgrade() -> None:
    op.create_index(
        "ix_patterns_active_normalized_title",
        "patterns",
        ["project_id", "normalized_title"],
        postgresql_where=sa.text("is_active"),
    )
    op.execute(f"ALTER TABLE patterns SET (fillfactor = {FILLFACTOR})")
    # Row-level security is forced on patterns: data changes say they span every project.
    op.execute("SET LOCAL app.all_projects = 'on'")
    op.execute(
        """
        UPDATE patterns p SET usage_count = c.n
        FROM (SELECT q.id, count(u.id) AS n FROM patterns q
              LEFT JOIN pattern_usage u ON u.pattern_id = q.id
              WHERE q.is_active GROUP BY q.id) c
        WHERE p.id = c.id AND p.usage_count <> c.n
        """
    )


def downgrade() -> None:
    op.execute("ALTER TABLE patterns RESET (fillfactor)")
    op.drop_index("ix_patterns_active_normalized_title", table_name="patterns")
