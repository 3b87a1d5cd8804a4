"""Budget reservations become leases; submitted Message Batches are recorded once.

Adds ``budget_reservations.lease_expires_at``: set at reserve time to now +
``PATTERNS_BUDGET_LEASE_S`` and renewed by the call in flight (a heartbeat around a Messages
call, each poll of a Message Batch); the housekeeping sweep releases only reservations whose
lease has lapsed. Existing rows get ``created_at + 900 s`` (the old fixed timeout), and the
server default (now + 900 s) keeps reservations inserted by not-yet-upgraded workers safe.

Adds ``claude_message_batches``: one row per submitted batch, keyed on a SHA-256 (hex) of the
batch's requests, so a redelivered Claude task resumes polling the batch it already submitted
instead of submitting (and paying for) it again.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "budget_reservations",
        sa.Column(
            "lease_expires_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("(now() + '00:15:00'::interval)"),
            nullable=False,
        ),
    )
    op.execute(
        "UPDATE budget_reservations SET lease_expires_at = created_at + interval '900 seconds'"
    )
    op.create_index(
        "ix_budget_reservations_status_lease",
        "budget_reservations",
        ["status", "lease_expires_at"],
    )
    op.create_table(
        "claude_message_batches",
        sa.Column("request_key", sa.Text(), nullable=False),
        sa.Column("batch_id", sa.Text(), nullable=True),
        sa.Column("reservations", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "request_key ~ '^[0-9a-f]{64}$'", name="claude_message_batches_key_check"
        ),
        sa.PrimaryKeyConstraint("request_key"),
    )


def downgrade() -> None:
    op.drop_table("claude_message_batches")
    op.drop_index("ix_budget_reservations_status_lease", table_name="budget_reservations")
    op.drop_column("budget_reservations", "lease_expires_at")
