"""The exact response cache: accepted model outputs, served again with no model call.

Adds ``llm_response_cache`` (one accepted output per project, request SHA-256, task type, model,
prompt version and schema version; see ``pipeline.extract.cache``), project-scoped: row-level
security forced with the same ``project_isolation`` policy 0004 gave every project-scoped table,
so one project's output never serves another. Adds ``llm_calls.cache_hit`` (a request answered
from the cache, which reached no model); existing rows are model calls (``false``).

No data changes (a constant column default is metadata only), so no ``app.all_projects``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

APP_ROLE = "patterns_app"
TABLE = "llm_response_cache"
ALL_PROJECTS = "current_setting('app.all_projects', true) = 'on'"
CURRENT = "nullif(current_setting('app.current_project', true), '')::uuid"


def upgrade() -> None:
    op.add_column(
        "llm_calls",
        sa.Column("cache_hit", sa.Boolean(), server_default=sa.text("false"), nullable=False),
    )
    op.create_table(
        TABLE,
        sa.Column("project_id", sa.UUID(), nullable=False),
        sa.Column("prompt_sha256", sa.Text(), nullable=False),
        sa.Column("task_type", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("prompt_version", sa.Text(), nullable=False),
        sa.Column("schema_version", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("tokens_in", sa.Integer(), server_default="0", nullable=False),
        sa.Column("tokens_out", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "prompt_sha256 ~ '^[0-9a-f]{64}$'", name="llm_response_cache_sha256_check"
        ),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint(
            "project_id",
            "prompt_sha256",
            "task_type",
            "model",
            "prompt_version",
            "schema_version",
        ),
    )
    # 0004's default privileges cover tables the owner creates; granted here too, as 0002 did,
    # so the table does not depend on who ran 0004.
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {TABLE} TO {APP_ROLE}")
    op.execute(f"ALTER TABLE {TABLE} ENABLE ROW LEVEL SECURITY")
    op.execute(
        f"CREATE POLICY project_isolation ON {TABLE} "
        f"USING (project_id = {CURRENT} OR {ALL_PROJECTS}) "
        f"WITH CHECK (project_id = {CURRENT} OR {ALL_PROJECTS})"
    )
    op.execute(f"ALTER TABLE {TABLE} FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    op.execute(f"DROP POLICY IF EXISTS project_isolation ON {TABLE}")
    op.drop_table(TABLE)
    op.drop_column("llm_calls", "cache_hit")
