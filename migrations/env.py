"""Alembic environment: the URL comes from the caller or from Switchboard's settings."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool, text

from shared.models import Base
from shared.settings import get_settings, with_database_driver

config = context.config
target_metadata = Base.metadata

# Held for the migration's transaction: every web process migrates before it serves (Procfile,
# docker-compose), so several starting at once take turns, and the later ones find the schema
# at head. Any constant works, as long as it is the same in every process.
MIGRATION_LOCK_ID = 0x5B0A2D


def run_migrations() -> None:
    url = with_database_driver(config.get_main_option("sqlalchemy.url") or "")
    engine = create_engine(url or get_settings().database_url, poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata)
        with context.begin_transaction():
            connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            context.run_migrations()
    engine.dispose()


run_migrations()
