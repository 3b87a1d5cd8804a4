"""Poison extract tasks: count the extract starts that no clean finish followed.

Adds ``interactions.extract_starts``: an extract task adds 1 when it claims the interaction
(:mod:`pipeline.extract.claim`) and sets it back to 0 when it releases its claim after the batch
returned or raised; a worker that is killed (OOM, segfault) releases nothing, so only crashes
accumulate. An interaction claimed again with ``PATTERNS_EXTRACT_MAX_STARTS`` such starts goes
``dead``. Existing rows start at 0 (a constant default: metadata only).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "interactions",
        sa.Column("extract_starts", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_column("interactions", "extract_starts")
