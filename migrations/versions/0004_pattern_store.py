"""The pattern store learns and answers: one active pattern per idea, a live feed, row-level
security in force.

- ``patterns.normalized_title`` (generated: lower-case, runs of non-word characters to one space,
  trimmed, the same rule as ``pipeline.text.normalize_title``) and a unique index on
  ``(project_id, type, normalized_title)`` over active patterns: no two active patterns of a
  project share a normalised title and type. Existing duplicates are merged first: the oldest
  stays active, the others become inactive, ``superseded_by`` it.
- ``validation_status`` may be ``contradicted``.
- A statement trigger on ``pattern_events`` that sends ``NOTIFY pattern_events,
  '{"project_id": ..., "id": <newest>}'`` per project written (the live feed wakes on it); event
  types become ``<entity>.<verb>`` (``created`` → ``pattern.created``).
- Row-level security is forced (``FORCE ROW LEVEL SECURITY``: the owner is subject to it too) and
  every policy also admits explicit cross-project work (``app.all_projects = 'on'``); the
  application role ``patterns_app`` can log in (set its password on an external server; the
  embedded one trusts local connections) and gets rights on future tables too.

Data changes in later revisions must ``SET LOCAL app.all_projects = 'on'`` first.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

APP_ROLE = "patterns_app"
PROJECT_SCOPED_TABLES = (
    "project_members",
    "patterns",
    "pattern_relationships",
    "pattern_validations",
    "pattern_usage",
    "pattern_events",
    "interactions",
    "typescript_errors",
    "code_analysis",
    "recommendations",
)
NORMALIZED = r"btrim(regexp_replace(lower(title), '[^\w]+', ' ', 'g'))"
ALL_PROJECTS = "current_setting('app.all_projects', true) = 'on'"
CURRENT = "nullif(current_setting('app.current_project', true), '')::uuid"


def upgrade() -> None:
    op.add_column(
        "patterns",
        sa.Column("normalized_title", sa.Text(), sa.Computed(NORMALIZED, persisted=True)),
    )
    # One active pattern per (project, type, normalised title): merge existing duplicates into
    # the oldest before the index can exist, as the store would have (a merge validation each).
    op.execute(
        """
        CREATE TEMPORARY TABLE twins ON COMMIT DROP AS
        SELECT id, keep FROM (
            SELECT id, first_value(id) OVER w AS keep, row_number() OVER w AS n
            FROM patterns WHERE is_active
            WINDOW w AS (PARTITION BY project_id, type, normalized_title ORDER BY created_at, id)
        ) ranked WHERE n > 1
        """
    )
    op.execute(
        "UPDATE patterns p SET is_active = false, superseded_by = t.keep, updated_at = now() "
        "FROM twins t WHERE p.id = t.id"
    )
    op.execute(
        """
        INSERT INTO pattern_validations (project_id, pattern_id, validating_pattern_id, validator,
            validation_type, result, confidence, evidence, interaction_id)
        SELECT p.project_id, t.keep, t.id, 'title-merge', 'merge', 'confirmed', 1.0,
               jsonb_build_object('match', 'title', 'title', p.title), p.source_interaction_id
        FROM twins t JOIN patterns p ON p.id = t.id
        ON CONFLICT DO NOTHING
        """
    )
    op.execute(
        """
        UPDATE patterns p SET validation_count = c.n FROM (
            SELECT pattern_id, count(*) AS n FROM pattern_validations
            WHERE result = 'confirmed' GROUP BY pattern_id
        ) c WHERE p.id = c.pattern_id AND p.id IN (SELECT keep FROM twins)
        """
    )
    # Strength becomes the Wilson lower bound of the confirming share (pipeline.store.lifecycle).
    op.execute(
        """
        UPDATE patterns SET pattern_strength = round(((p + 1.9208 / n
            - 1.96 * sqrt(p * (1 - p) / n + 0.9604 / (n * n))) / (1 + 3.8416 / n))::numeric, 4)
        FROM (SELECT id AS pid, (1.0 + validation_count) / (1 + validation_count
                     + contradiction_count) AS p,
                     (1.0 + validation_count + contradiction_count) AS n FROM patterns) w
        WHERE patterns.id = w.pid
        """
    )
    op.create_index(
        "uq_patterns_active_title",
        "patterns",
        ["project_id", "type", "normalized_title"],
        unique=True,
        postgresql_where=sa.text("is_active"),
    )
    op.create_index("ix_patterns_project_created", "patterns", ["project_id", "created_at", "id"])
    op.create_index("ix_patterns_superseded_by", "patterns", ["superseded_by"])
    op.drop_constraint("patterns_validation_status_check", "patterns", type_="check")
    op.create_check_constraint(
        "patterns_validation_status_check",
        "patterns",
        "validation_status IN ('pending','validated','rejected','contested','contradicted')",
    )
    op.create_index(
        "ix_pattern_validations_validating", "pattern_validations", ["validating_pattern_id"]
    )
    _events()
    _row_level_security()


def _events() -> None:
    op.execute("UPDATE pattern_events SET event_type = 'pattern.' || event_type "
               "WHERE event_type NOT LIKE '%.%'")  # fmt: skip
    op.execute(
        """
        CREATE FUNCTION notify_pattern_events() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('pattern_events',
                              json_build_object('project_id', project_id, 'id', max(id))::text)
            FROM new_rows GROUP BY project_id;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER pattern_events_notify AFTER INSERT ON pattern_events
        REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
        EXECUTE FUNCTION notify_pattern_events()
        """
    )


def _row_level_security() -> None:
    op.execute(f"ALTER ROLE {APP_ROLE} LOGIN")
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public "
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {APP_ROLE}"
    )
    op.execute(
        f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {APP_ROLE}"
    )
    op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {APP_ROLE}")
    op.execute(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {APP_ROLE}")
    op.execute("DROP POLICY IF EXISTS project_isolation ON projects")
    op.execute(
        f"CREATE POLICY project_isolation ON projects "
        f"USING (id = {CURRENT} OR {ALL_PROJECTS}) WITH CHECK (id = {CURRENT} OR {ALL_PROJECTS})"
    )
    op.execute("ALTER TABLE projects FORCE ROW LEVEL SECURITY")
    for table in PROJECT_SCOPED_TABLES:
        op.execute(f"DROP POLICY IF EXISTS project_isolation ON {table}")
        op.execute(
            f"CREATE POLICY project_isolation ON {table} "
            f"USING (project_id = {CURRENT} OR {ALL_PROJECTS}) "
            f"WITH CHECK (project_id = {CURRENT} OR {ALL_PROJECTS})"
        )
        op.execute(f"ALTER TABLE {table} FORCE ROW LEVEL SECURITY")


def downgrade() -> None:
    for table in ("projects", *PROJECT_SCOPED_TABLES):
        op.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
        op.execute(f"DROP POLICY IF EXISTS project_isolation ON {table}")
    op.execute(
        f"CREATE POLICY project_isolation ON projects TO {APP_ROLE} "
        "USING (id::text = current_setting('app.current_project', true))"
    )
    for table in PROJECT_SCOPED_TABLES:
        op.execute(
            f"CREATE POLICY project_isolation ON {table} TO {APP_ROLE} "
            "USING (project_id::text = current_setting('app.current_project', true)) "
            "WITH CHECK (project_id::text = current_setting('app.current_project', true))"
        )
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON TABLES FROM {APP_ROLE}")
    op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE ALL ON SEQUENCES FROM {APP_ROLE}")
    op.execute(f"ALTER ROLE {APP_ROLE} NOLOGIN")
    op.execute("DROP TRIGGER IF EXISTS pattern_events_notify ON pattern_events")
    op.execute("DROP FUNCTION IF EXISTS notify_pattern_events()")
    op.execute("UPDATE pattern_events SET event_type = 'created' "
               "WHERE event_type = 'pattern.created'")  # fmt: skip
    op.drop_index("ix_pattern_validations_validating", table_name="pattern_validations")
    op.execute("UPDATE patterns SET validation_status = 'contested' "
               "WHERE validation_status = 'contradicted'")  # fmt: skip
    op.drop_constraint("patterns_validation_status_check", "patterns", type_="check")
    op.create_check_constraint(
        "patterns_validation_status_check",
        "patterns",
        "validation_status IN ('pending','validated','rejected','contested')",
    )
    op.drop_index("ix_patterns_superseded_by", table_name="patterns")
    op.drop_index("ix_patterns_project_created", table_name="patterns")
    op.drop_index("uq_patterns_active_title", table_name="patterns")
    op.drop_column("patterns", "normalized_title")
