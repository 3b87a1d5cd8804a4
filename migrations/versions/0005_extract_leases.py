"""Extract leases: an extract task claims the interactions it will extract.

Adds ``interactions.lease_owner`` (the Celery task id, or another caller's token, that holds
the interaction) and ``interactions.lease_expires_at`` (when the claim lapses, so work held by a
killed worker is free again), and a partial index on the interactions an extract task may top
its batch up with: ``queued`` and never routed (``complexity IS NULL``), oldest first by id.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("interactions", sa.Column("lease_owner", sa.Text(), nullable=True))
    op.add_column(
        "interactions", sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_index(
        "ix_interactions_top_up",
        "interactions",
        ["id"],
        postgresql_where=sa.text("status = 'queued' AND complexity IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_interactions_top_up", table_name="interactions")
    op.drop_column("interactions", "lease_expires_at")
    op.drop_column("interactions", "lease_owner")
