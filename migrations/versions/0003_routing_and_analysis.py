"""Routing and strategic analysis: interaction complexity and analysis status, recommendation
provider.

Adds ``interactions.complexity`` (0-1, set when first routed), ``interactions.analysis_status``
(NULL, ``pending``, ``done``, ``failed``) with ``analysis_error``, a partial index on pending
analyses (what ``patterns run`` waits for), ``recommendations.provider`` and an index on
``recommendations.interaction_id``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("interactions", sa.Column("complexity", sa.Float(), nullable=True))
    op.add_column("interactions", sa.Column("analysis_status", sa.Text(), nullable=True))
    op.add_column("interactions", sa.Column("analysis_error", sa.Text(), nullable=True))
    op.create_check_constraint(
        "interactions_analysis_status_check",
        "interactions",
        "analysis_status IN ('pending','done','failed')",
    )
    op.create_index(
        "ix_interactions_analysis_pending",
        "interactions",
        ["updated_at"],
        postgresql_where=sa.text("analysis_status = 'pending'"),
    )
    op.add_column("recommendations", sa.Column("provider", sa.Text(), nullable=True))
    op.create_index("ix_recommendations_interaction", "recommendations", ["interaction_id"])


def downgrade() -> None:
    op.drop_index("ix_recommendations_interaction", table_name="recommendations")
    op.drop_column("recommendations", "provider")
    op.drop_index("ix_interactions_analysis_pending", table_name="interactions")
    op.drop_constraint("interactions_analysis_status_check", "interactions", type_="check")
    op.drop_column("interactions", "analysis_error")
    op.drop_column("interactions", "analysis_status")
    op.drop_column("interactions", "complexity")
