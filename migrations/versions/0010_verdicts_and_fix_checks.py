"""People's verdicts on feedback comments; the compiler's word on suggested TypeScript fixes.

Adds ``feedback_comments`` (our GitHub feedback comments: where each is and the patterns it
listed) and ``feedback_verdicts`` (the ledger of verdicts read from their 👍/👎 reactions and
quoting replies, unique per comment, pattern and person, each backed by one
``pattern_validations`` row), both under the project's row-level security. Comments posted before
this revision are filled in from ``webhook_deliveries.feedback_comment_id`` and the
``pattern_usage`` rows their posting wrote (``used_by = 'feedback:github'``).

Adds ``code_analysis.check_status`` / ``first_check_status`` / ``compile_attempts`` /
``tsc_diagnostics`` and ``typescript_errors.fix_check`` (``verified``, ``does_not_compile``,
``unresolved``, ``unchecked``). Existing suggestions get theirs from ``compiles`` /
``error_resolved``.

Revision ID: 0010
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

APP_ROLE = "patterns_app"
ALL_PROJECTS = "current_setting('app.all_projects', true) = 'on'"
CURRENT = "nullif(current_setting('app.current_project', true), '')::uuid"
TABLES = ("feedback_comments", "feedback_verdicts")
CHECKS = "'verified','does_not_compile','unresolved','unchecked'"
#: A suggestion's check from the booleans 0001 stored.
CHECK_OF = (
    "CASE WHEN compiles IS NULL THEN 'unchecked' WHEN compiles AND error_resolved THEN 'verified' "
    "WHEN error_resolved THEN 'does_not_compile' ELSE 'unresolved' END"
)


def _now() -> sa.TextClause:
    return sa.text("now()")


def upgrade() -> None:
    op.create_table(
        "feedback_comments",
        sa.Column("comment_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("project_id", sa.UUID(), nullable=False),
        sa.Column("delivery_id", sa.Text(), nullable=True),
        sa.Column("repo", sa.Text(), nullable=False),
        sa.Column("issue_number", sa.Integer(), nullable=False),
        sa.Column("pattern_ids", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("posted_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("comment_id"),
    )
    op.create_index("ix_feedback_comments_thread", "feedback_comments", ["repo", "issue_number"])
    op.create_index("ix_feedback_comments_posted", "feedback_comments", ["posted_at"])
    op.create_table(
        "feedback_verdicts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("project_id", sa.UUID(), nullable=False),
        sa.Column("comment_id", sa.BigInteger(), nullable=False),
        sa.Column("pattern_id", sa.UUID(), nullable=False),
        sa.Column("login", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_id", sa.BigInteger(), nullable=False),
        sa.Column("validation_id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.CheckConstraint(
            "result IN ('confirmed','contradicted','uncertain')",
            name="feedback_verdicts_result_check",
        ),
        sa.CheckConstraint("source IN ('reaction','reply')", name="feedback_verdicts_source_check"),
        sa.ForeignKeyConstraint(
            ["comment_id"], ["feedback_comments.comment_id"], ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["pattern_id"], ["patterns.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["validation_id"], ["pattern_validations.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("comment_id", "pattern_id", "login", name="uq_feedback_verdicts_vote"),
    )
    op.create_index("ix_feedback_verdicts_validation", "feedback_verdicts", ["validation_id"])
    for table in TABLES:
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {table} TO {APP_ROLE}")
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY project_isolation ON {table} "
            f"USING (project_id = {CURRENT} OR {ALL_PROJECTS}) "
            f"WITH CHECK (project_id = {CURRENT} OR {ALL_PROJECTS})"
        )
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")
    op.execute(f"GRANT USAGE, SELECT ON SEQUENCE feedback_verdicts_id_seq TO {APP_ROLE}")
    op.execute("SET LOCAL app.all_projects = 'on'")
    op.execute(
        """
        INSERT INTO feedback_comments
            (comment_id, project_id, delivery_id, repo, issue_number, pattern_ids, posted_at)
        SELECT d.feedback_comment_id, i.project_id, d.delivery_id, p.name,
               (i.metadata->>'number')::int,
               COALESCE((SELECT jsonb_agg(DISTINCT u.pattern_id::text)
                         FROM pattern_usage u
                         WHERE u.used_by = 'feedback:github'
                           AND u.context->>'comment_id' = d.feedback_comment_id::text),
                        '[]'::jsonb),
               COALESCE(d.feedback_posted_at, now())
        FROM webhook_deliveries d
        JOIN interactions i ON i.id = d.interaction_id
        JOIN projects p ON p.id = i.project_id
        WHERE d.feedback_comment_id IS NOT NULL
          AND jsonb_typeof(i.metadata->'number') = 'number'
        ON CONFLICT DO NOTHING
        """
    )
    _fix_checks()


def _fix_checks() -> None:
    op.add_column("typescript_errors", sa.Column("fix_check", sa.Text(), nullable=True))
    op.create_check_constraint(
        "typescript_errors_fix_check_check", "typescript_errors", f"fix_check IN ({CHECKS})"
    )
    op.add_column(
        "code_analysis",
        sa.Column("check_status", sa.Text(), server_default="unchecked", nullable=False),
    )
    op.add_column("code_analysis", sa.Column("first_check_status", sa.Text(), nullable=True))
    op.add_column(
        "code_analysis",
        sa.Column("compile_attempts", sa.Integer(), server_default="0", nullable=False),
    )
    op.add_column(
        "code_analysis",
        sa.Column(
            "tsc_diagnostics",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
    )
    op.create_check_constraint(
        "code_analysis_check_status_check", "code_analysis", f"check_status IN ({CHECKS})"
    )
    op.create_check_constraint(
        "code_analysis_first_check_status_check",
        "code_analysis",
        f"first_check_status IN ({CHECKS})",
    )
    op.execute(
        f"UPDATE code_analysis SET check_status = {CHECK_OF}, first_check_status = {CHECK_OF}, "
        "compile_attempts = CASE WHEN compiles IS NULL THEN 0 ELSE 1 END"
    )
    op.execute(
        """
        UPDATE typescript_errors t SET fix_check = c.check_status
        FROM (SELECT DISTINCT ON (typescript_error_id) typescript_error_id, check_status
              FROM code_analysis ORDER BY typescript_error_id, id DESC) c
        WHERE c.typescript_error_id = t.id
        """
    )


def downgrade() -> None:
    for column in ("tsc_diagnostics", "compile_attempts", "first_check_status", "check_status"):
        op.drop_column("code_analysis", column)
    op.drop_column("typescript_errors", "fix_check")
    op.drop_table("feedback_verdicts")
    op.drop_table("feedback_comments")
