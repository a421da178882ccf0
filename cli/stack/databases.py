"""PostgreSQL servers as the stack uses them: whether one answers, and databases made and
dropped on one (the dev stack's ``switchboard``, each test stack's copy of a template)."""

from __future__ import annotations

import contextlib
from typing import Any

from cli.stack.net import ServiceUnavailable, redact_url


def check_database(url: str) -> None:
    """Run SELECT 1 against ``url``; raise ServiceUnavailable with the reason if it fails."""
    from sqlalchemy import create_engine, make_url, text
    from sqlalchemy.pool import NullPool

    connect_args: dict[str, Any] = {}
    try:
        if make_url(url).get_driver_name() == "psycopg2":
            connect_args["connect_timeout"] = 5
        engine = create_engine(url, poolclass=NullPool, connect_args=connect_args)
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        finally:
            engine.dispose()
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceUnavailable(
            f"the database at {redact_url(url)} does not answer: {reason}"
        ) from exc


def admin_connection(server_url: str) -> Any:
    """An autocommit psycopg2 connection to the ``postgres`` database of ``server_url``'s server
    (a TCP host or, as ``?host=/dir``, a Unix socket directory)."""
    import psycopg2
    from sqlalchemy.engine import make_url

    url = make_url(server_url).set(database="postgres")
    params: dict[str, Any] = {"dbname": url.database, "user": url.username or "postgres"}
    if url.password:
        params["password"] = url.password
    if url.host:
        params["host"] = url.host
    if url.port:
        params["port"] = url.port
    host = url.query.get("host")
    if host:
        params["host"] = host if isinstance(host, str) else host[0]
    connection = psycopg2.connect(**params)
    connection.autocommit = True  # CREATE DATABASE cannot run inside a transaction
    return connection


def create_database(
    server_url: str, name: str, template: str | None = None, *, exist_ok: bool = False
) -> str:
    """Create database ``name`` (a copy of ``template`` when given) on the server of
    ``server_url``; its URL. With ``exist_ok``, a database of that name already there is kept."""
    from psycopg2 import errors, sql
    from sqlalchemy.engine import make_url

    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template:
        statement += sql.SQL(" TEMPLATE {}").format(sql.Identifier(template))
    with (
        contextlib.closing(admin_connection(server_url)) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if not (exist_ok and cursor.fetchone() is not None):
            with contextlib.suppress(*([errors.DuplicateDatabase] if exist_ok else [])):
                cursor.execute(statement)
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name``, disconnecting whoever is still in it."""
    from psycopg2 import sql

    with (
        contextlib.closing(admin_connection(server_url)) as connection,
        connection.cursor() as cursor,
    ):
        cursor.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
