"""Budget reservations: the money set aside per Claude call, settled or released after it.

Adds ``budget_reservations`` (not project-scoped: no row-level security) and grants the
application role ``patterns_app`` the same rights 0001 gave it on every table.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

APP_ROLE = "patterns_app"


def upgrade() -> None:
    op.create_table(
        "budget_reservations",
        sa.Column("id", sa.UUID(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("task_type", sa.Text(), nullable=False),
        sa.Column("interaction_id", sa.BigInteger(), nullable=True),
        sa.Column("priority", sa.Text(), server_default="normal", nullable=False),
        sa.Column("amount_usd", sa.Numeric(precision=12, scale=6), nullable=False),
        sa.Column("actual_usd", sa.Numeric(precision=12, scale=6), nullable=True),
        sa.Column("status", sa.Text(), server_default="reserved", nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "priority IN ('normal','emergency')", name="budget_reservations_priority_check"
        ),
        sa.CheckConstraint(
            "status IN ('reserved','settled','released')", name="budget_reservations_status_check"
        ),
        sa.CheckConstraint(
            "amount_usd >= 0 AND (actual_usd IS NULL OR actual_usd >= 0)",
            name="budget_reservations_nonnegative",
        ),
        sa.ForeignKeyConstraint(["interaction_id"], ["interactions.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_budget_reservations_status_created",
        "budget_reservations",
        ["status", "created_at"],
        unique=False,
    )
    # 0001 granted on ALL TABLES at the time; a table created later needs its own grant.
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON budget_reservations TO {APP_ROLE}")


def downgrade() -> None:
    op.execute(f"REVOKE ALL ON budget_reservations FROM {APP_ROLE}")
    op.drop_index("ix_budget_reservations_status_created", table_name="budget_reservations")
    op.drop_table("budget_reservations")
