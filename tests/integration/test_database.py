"""The schema and the idempotent writes, on the real embedded Postgres."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from pipeline.db.engine import ALL_PROJECTS, MIGRATIONS_DIR, Database, ProjectScope
from pipeline.db.models import Base, Interaction, Pattern, Project, ProjectMember, WebhookDelivery
from pipeline.intake.records import read_records
from pipeline.intake.store import store
from pipeline.ops.stats import table_counts

pytestmark = pytest.mark.integration

EMBEDDING_COLUMNS = {("patterns", "embedding"), ("typescript_errors", "embedding"),
                     ("code_analysis", "embedding")}  # fmt: skip


def test_migration_creates_every_table_vector_and_hnsw(db: Database) -> None:
    with db.session(ALL_PROJECTS) as s:
        tables = set(
            s.scalars(text("SELECT tablename FROM pg_tables WHERE schemaname='public'")).all()
        )
        assert set(Base.metadata.tables) <= tables
        assert s.scalar(text("SELECT extversion FROM pg_extension WHERE extname='vector'"))
        hnsw = s.execute(
            text("SELECT tablename, indexdef FROM pg_indexes WHERE indexdef ILIKE '%USING hnsw%'")
        ).all()
    indexed = {(t, "embedding") for t, d in hnsw if "vector_cosine_ops" in d}
    assert indexed == EMBEDDING_COLUMNS


def test_models_and_migrations_agree(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    engine = create_engine(database_url)
    with engine.connect() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        cfg.attributes["connection"] = conn
        command.check(cfg)  # raises if autogenerate would emit anything
        command.downgrade(cfg, "base")
        conn.commit()
        left = conn.scalar(text("SELECT count(*) FROM pg_tables WHERE schemaname='public'"))
        assert left == 1  # alembic_version only
        command.upgrade(cfg, "head")
        conn.commit()
        assert conn.scalar(text("SELECT count(*) FROM patterns")) == 0
    engine.dispose()


def test_row_level_security_isolates_projects(db: Database) -> None:
    with db.session(ALL_PROJECTS) as s:
        a = s.scalar(select(Project.id).from_statement(
            text("INSERT INTO projects (name) VALUES ('a/a') RETURNING id")))  # fmt: skip
        b = s.scalar(select(Project.id).from_statement(
            text("INSERT INTO projects (name) VALUES ('b/b') RETURNING id")))  # fmt: skip
        for pid, title in ((a, "alpha"), (b, "beta")):
            s.add(Pattern(project_id=pid, type="testing", title=title, content={}))
    assert a is not None and b is not None
    with db.session(ProjectScope(a)) as s:
        assert s.scalars(select(Pattern.title)).all() == ["alpha"]
        assert s.scalars(select(Project.name)).all() == ["a/a"]
        # Even naming the other project in the WHERE clause finds nothing.
        assert s.scalars(select(Pattern.title).where(Pattern.project_id == b)).all() == []
    with db.session(ProjectScope(a)) as s, pytest.raises(Exception, match="row-level security"):
        s.add(Pattern(project_id=b, type="testing", title="sneaky", content={}))
        s.flush()
    with db.session(ALL_PROJECTS) as s:  # explicit cross-project work sees everything
        assert sorted(s.scalars(select(Pattern.title)).all()) == ["alpha", "beta"]


def _write_jsonl(path: Path, records: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_store_is_idempotent_and_records_deliveries(
    db: Database, shared_corpus: Path, tmp_path: Path
) -> None:
    octo = shared_corpus.parent / "octokit-payload-examples"
    ping = json.loads((octo / "ping" / "payload.json").read_text())
    records = list(read_records([shared_corpus], limit=5))
    extra = _write_jsonl(
        tmp_path / "extra.jsonl",
        [
            {"event": "ping", "delivery": "ping-1", "payload": ping},
            {"project": "acme/api", "content": "We agreed to retry webhooks with backoff."},
            {"project": "acme/api", "content": "We agreed to retry webhooks with backoff."},
        ],
    )
    records += list(read_records([extra]))
    with db.session(ALL_PROJECTS) as s:
        first = store(s, records)
    with db.session(ALL_PROJECTS) as s:
        second = store(s, records)
    assert first.created == 6 and first.skipped == 1  # 5 PRs + 1 interaction (duplicate merged)
    assert second.created == 0 and second.interaction_ids == first.interaction_ids
    with db.session(ALL_PROJECTS) as s:
        assert s.scalar(select(func.count()).select_from(Interaction)) == 6
        deliveries = dict(
            s.execute(select(WebhookDelivery.delivery_id, WebhookDelivery.outcome)).all()
        )
        assert deliveries["ping-1"] == "skipped"
        assert sum(1 for o in deliveries.values() if o == "stored") == 5
        projects = set(s.scalars(select(Project.name)))
        assert projects == {"celery/celery", "acme/api"}
        assert s.scalar(select(func.count()).select_from(ProjectMember)) >= 1
        statuses = set(s.scalars(select(Interaction.status)))
        assert statuses == {"received"}
        counts = table_counts(s)
    assert counts["interactions"] == 6
    assert counts["interactions_by_status"] == {"received": 6}
    assert set(Base.metadata.tables) <= set(counts)


def test_connect_migrates_an_empty_database(pg_server: object) -> None:
    """``Database.connect`` with DATABASE_URL set migrates a database that has no tables."""
    from pipeline.settings import Settings

    name = f"e_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_server.get_uri(driver="psycopg"), isolation_level="AUTOCOMMIT")  # type: ignore[attr-defined]
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = pg_server.get_uri(database=name)  # type: ignore[attr-defined]  # libpq style on purpose
    database = Database.connect(Settings(database_url=url))
    with database.session(ALL_PROJECTS) as s:
        assert s.scalar(text("SELECT version_num FROM alembic_version")) == _head()
    database.dispose()
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()


def _head() -> str:
    """The newest revision in migrations/versions."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from pipeline.db.engine import MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None
    return head


def test_a_dropped_connection_is_a_retryable_error_that_names_no_parameters(db: Database) -> None:
    """Postgres ending the session (as a restart does) reaches the caller as
    ``DatabaseUnavailableError``, which the tasks' ``autoretry_for`` retries; the message carries
    the driver's words, not the statement's bound parameters."""
    from pipeline.errors import DatabaseUnavailableError, RetryableError
    from workers.app import RETRY_POLICY

    with pytest.raises(DatabaseUnavailableError) as caught, db.session(ALL_PROJECTS) as s:
        backend = s.scalar(text("SELECT pg_backend_pid()"))
        with db.engine.connect() as admin:  # the owner ends the session's connection
            admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend})
            admin.commit()
        s.execute(text("SELECT :secret"), {"secret": "s3"})
    assert isinstance(caught.value, RetryableError)
    assert issubclass(DatabaseUnavailableError, RETRY_POLICY["autoretry_for"])  # type: ignore[arg-type]
    assert "s3" not in str(caught.value) and "SELECT" not in str(caught.value)
    with db.session(ALL_PROJECTS) as s:  # the pool hands out a fresh connection next time
        assert s.scalar(text("SELECT 1")) == 1


def test_a_failing_statement_names_no_bound_parameters(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLAlchemy writes a failing statement's bound parameters into its error message
    (``[parameters: ...]``), and so into task failure logs and tracebacks; the engines hide them
    (``hide_parameters=True``). The statement itself and the driver's words stay."""
    import logging
    import traceback

    from sqlalchemy.exc import DBAPIError

    secret = "private interaction content 7f3a"
    with pytest.raises(DBAPIError) as caught, db.session(ALL_PROJECTS) as s:
        s.execute(text("SELECT length(CAST(:content AS text)) / 0"), {"content": secret})
    rendered = "".join(traceback.format_exception(caught.value))
    assert "division by zero" in rendered and "SELECT length" in rendered
    assert secret not in rendered and secret not in repr(caught.value)
    assert "parameters hidden" in str(caught.value)
    with caplog.at_level(logging.ERROR):
        logging.getLogger("test.task").error("task failed", exc_info=caught.value)
    assert "division by zero" in caplog.text and secret not in caplog.text


def test_an_unreachable_server_is_a_retryable_error() -> None:
    from pipeline.errors import DatabaseUnavailableError

    unreachable = Database.from_url("postgresql+psycopg://u:hunter2@127.0.0.1:9/none")
    with pytest.raises(DatabaseUnavailableError) as caught, unreachable.session(ALL_PROJECTS) as s:
        s.execute(text("SELECT 1"))
    assert "hunter2" not in str(caught.value)
    unreachable.dispose()


def test_migrating_a_store_with_duplicates_merges_them(pg_server: object) -> None:
    """Revision 0004 on a database that has twin active patterns: the oldest stays, the others
    are merged into it (inactive, superseded_by, a merge validation), strengths recomputed."""
    from pipeline.db.engine import upgrade

    name = f"m_{uuid.uuid4().hex[:10]}"
    admin = create_engine(pg_server.get_uri(driver="psycopg"), isolation_level="AUTOCOMMIT")  # type: ignore[attr-defined]
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = pg_server.get_uri(database=name, driver="psycopg")  # type: ignore[attr-defined]
    upgrade(url, "0003")
    engine = create_engine(url)
    with engine.begin() as conn:
        project = conn.scalar(text("INSERT INTO projects (name) VALUES ('a/a') RETURNING id"))
        for i, title in enumerate(["Retry with backoff", "retry with BACKOFF!", "Other idea"]):
            conn.execute(
                text(
                    "INSERT INTO patterns (project_id, type, title, created_at) "
                    "VALUES (:p, 'testing', :t, now() + make_interval(secs => :i))"
                ),
                {"p": project, "t": title, "i": i},
            )
    upgrade(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT title, is_active, superseded_by IS NOT NULL, validation_count, "
                "pattern_strength FROM patterns ORDER BY created_at"
            )
        ).all()
        merges = conn.scalar(text("SELECT count(*) FROM pattern_validations"))
    engine.dispose()
    assert [tuple(r[:4]) for r in rows] == [
        ("Retry with backoff", True, False, 1),
        ("retry with BACKOFF!", False, True, 0),
        ("Other idea", True, False, 0),
    ]
    assert merges == 1
    assert rows[0][4] == pytest.approx(0.3424, abs=1e-4) and rows[2][4] == pytest.approx(0.2065)
    with admin.connect() as conn:
        conn.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))
    admin.dispose()
