"""Extraction quality: trivial interactions and the label-free signals of every pattern.

Adds ``interactions.trivial``: the extractor said the interaction carries no reusable lesson
(a version bump, a typo fix) and gave no patterns; such an interaction is ``extracted`` and
counted as ``skipped_trivial``. Adds ``patterns.evidence_grounded`` (its evidence is found in
its interaction's text) and ``patterns.title_copy`` (its title restates the pull request's or
issue's title), computed at extraction (:mod:`pipeline.quality.signals`); NULL for patterns
extracted before this revision.

Revision ID: 0009
Revises: 0010 (0010 landed in the tree first; 0009 is applied after it)
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "interactions",
        sa.Column("trivial", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.add_column("patterns", sa.Column("evidence_grounded", sa.Boolean(), nullable=True))
    op.add_column("patterns", sa.Column("title_copy", sa.Boolean(), nullable=True))


def downgrade() -> None:
    op.drop_column("patterns", "title_copy")
    op.drop_column("patterns", "evidence_grounded")
    op.drop_column("interactions", "trivial")
