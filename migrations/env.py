"""Alembic environment: online migrations only, on a connection handed in or from settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

from pipeline.db.engine import resolve_url
from pipeline.db.models import Base
from pipeline.settings import Settings

target_metadata = Base.metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(resolve_url(Settings()), hide_parameters=True)
    with engine.connect() as conn:
        context.configure(connection=conn, target_metadata=target_metadata)
        with context.begin_transaction():
            context.run_migrations()


run_migrations_online()
