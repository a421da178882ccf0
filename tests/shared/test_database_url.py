"""Switchboard names its PostgreSQL driver itself: the bare URLs platforms hand out work."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from shared.db import migrate
from shared.settings import Settings, with_database_driver


@pytest.mark.parametrize(
    ("given", "used"),
    [
        ("postgresql://u:p@db:5432/sb", "postgresql+psycopg2://u:p@db:5432/sb"),
        ("postgres://u:p@db:5432/sb", "postgresql+psycopg2://u:p@db:5432/sb"),
        ("PostgreSQL://u@db/sb?sslmode=require", "postgresql+psycopg2://u@db/sb?sslmode=require"),
        ("postgresql+psycopg2://u@/sb?host=/run/pg", "postgresql+psycopg2://u@/sb?host=/run/pg"),
        # A driver named on purpose is kept (and fails loudly if it is not installed).
        ("postgresql+psycopg://u@db/sb", "postgresql+psycopg://u@db/sb"),
    ],
)
def test_a_url_without_a_driver_gets_psycopg2(given: str, used: str) -> None:
    assert with_database_driver(given) == used


@pytest.mark.parametrize("variable", ["DATABASE_URL", "SWITCHBOARD_DATABASE_URL"])
def test_settings_read_a_bare_postgres_url_with_the_driver(
    monkeypatch: pytest.MonkeyPatch, variable: str
) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("SWITCHBOARD_DATABASE_URL", raising=False)
    monkeypatch.setenv(variable, "postgres://sb:secret@db.internal:6543/switchboard")
    url = make_url(Settings().database_url)
    assert url.drivername == "postgresql+psycopg2"
    assert (url.host, url.port, url.database, url.password) == (
        "db.internal",
        6543,
        "switchboard",
        "secret",
    )


def test_migrate_takes_a_bare_postgresql_url(
    service_urls: tuple[str, str], template_database: str
) -> None:
    server_url, _ = service_urls
    bare = make_url(server_url).set(drivername="postgresql", database=template_database)
    # Already at head: the upgrade connects through psycopg2, takes the lock and does nothing.
    migrate(bare.render_as_string(hide_password=False))
    engine = create_engine(
        with_database_driver(bare.render_as_string(hide_password=False)), poolclass=NullPool
    )
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()
