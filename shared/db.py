"""Engine, sessions and the transaction boundary that the edges (requests, tasks) own."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import psycopg2
from psycopg2.extras import NamedTupleCursor
from sqlalchemy import Engine, TextClause, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from shared.settings import get_settings, with_database_driver

log = logging.getLogger(__name__)

_engine: Engine | None = None
_sessionmaker: sessionmaker[Session] | None = None

AFTER_COMMIT_KEY = "after_commit"


def get_engine() -> Engine:
    """The process-wide engine, created on first use from settings."""
    global _engine, _sessionmaker
    if _engine is None:
        settings = get_settings()
        _engine = create_engine(
            settings.database_url,
            pool_size=settings.db_pool_size,
            max_overflow=settings.db_max_overflow,
            # No pre-ping: it doubles the round trips of every short transaction. A dropped
            # connection fails one transaction; its task is retried or re-driven.
            pool_recycle=1800,
        )
        _sessionmaker = sessionmaker(bind=_engine, expire_on_commit=False)
    return _engine


def reset_engine(close: bool = True) -> None:
    """Forget the engine; with close=False keep a parent's connections open (after fork)."""
    global _engine, _sessionmaker
    if _engine is not None:
        _engine.dispose(close=close)
    _engine = None
    _sessionmaker = None


def new_session() -> Session:
    """A session bound to the process-wide engine."""
    get_engine()
    assert _sessionmaker is not None
    return _sessionmaker()


# A ``:name`` parameter of a text statement (not a ``::type`` cast).
SQL_PARAMETER = re.compile(r"(?<!:):([a-z_]+)")


@dataclass(frozen=True)
class PreparedStatement:
    """A statement run so often that planning it every time shows (psycopg2 sends each
    statement as text, which PostgreSQL plans anew): prepared on a connection the first time
    it runs there, then executed by name. ``sql`` takes ``:name`` parameters; ``parameters``
    gives each one's SQL type, in order."""

    name: str
    sql: str
    parameters: tuple[tuple[str, str], ...]

    @cached_property
    def _plain(self) -> TextClause:
        return text(self.sql)

    @cached_property
    def _execute(self) -> TextClause:
        names = ", ".join(f":{name}" for name, _ in self.parameters)
        return text(f"EXECUTE {self.name}({names})")

    @cached_property
    def _driver_execute(self) -> str:
        names = ", ".join(f"%({name})s" for name, _ in self.parameters)
        return f"EXECUTE {self.name}({names})"

    @cached_property
    def _driver_plain(self) -> str:
        return SQL_PARAMETER.sub(lambda m: f"%({m[1]})s", self.sql.replace("%", "%%"))

    def _prepare_once(self, info: dict[Any, Any], run: Callable[[str], object]) -> None:
        """PREPARE with ``run`` on the connection whose ``info`` this is, unless it was
        prepared there already (not undone by a rollback: it lasts as long as the connection)."""
        prepared: set[str] = info.setdefault("prepared_statements", set())
        if self.name not in prepared:
            positions = {name: f"${i}" for i, (name, _) in enumerate(self.parameters, start=1)}
            body = SQL_PARAMETER.sub(lambda m: positions[m[1]], self.sql)
            types = ", ".join(sql_type for _, sql_type in self.parameters)
            run(f"PREPARE {self.name} ({types}) AS {body}")
            prepared.add(self.name)

    def statement(self, session: Session) -> TextClause:
        """What to run on this session's connection: EXECUTE, once the statement is prepared
        there (unless settings turn prepared statements off)."""
        if not get_settings().db_prepared_statements:
            return self._plain
        connection = session.connection()
        self._prepare_once(connection.connection.info, connection.exec_driver_sql)
        return self._execute

    def run_alone(self, parameters: dict[str, Any], engine: Engine | None = None) -> list[Any]:
        """Run the statement as a transaction of its own, on a pooled connection in autocommit
        mode: one round trip, where a session's transaction costs three (BEGIN, the statement,
        COMMIT) and several times the client's CPU. Its rows, as named tuples. For a hot
        statement that needs nothing else in its transaction (the dial's claim)."""
        engine = engine or get_engine()
        try:
            pooled = engine.raw_connection()
        except psycopg2.Error as exc:
            # Connecting failed (the server restarts, or is away): SQLAlchemy's error, as a
            # session's checkout raises it, so that the task retries it like any other.
            raise DBAPIError.instance(
                "connect", {}, exc, psycopg2.Error, connection_invalidated=True
            ) from exc
        driver: Any = pooled.driver_connection
        sql = self._driver_plain
        try:
            driver.autocommit = True
            try:
                with driver.cursor(cursor_factory=NamedTupleCursor) as cursor:
                    if get_settings().db_prepared_statements:
                        self._prepare_once(pooled.info, cursor.execute)
                        sql = self._driver_execute
                    cursor.execute(sql, parameters)
                    rows = cursor.fetchall() if cursor.description else []
            finally:  # the pool's next user expects transactions
                if not driver.closed:
                    driver.autocommit = False
        except psycopg2.Error as exc:
            # As a session would: a lost connection leaves the pool, and the error is
            # SQLAlchemy's (which the tasks retry on).
            disconnected = bool(driver.closed) or engine.dialect.is_disconnect(exc, driver, None)
            if disconnected:
                pooled.invalidate(exc)
            raise DBAPIError.instance(
                sql, parameters, exc, psycopg2.Error, connection_invalidated=disconnected
            ) from exc
        finally:
            pooled.close()
        return rows


# What a service that runs several short transactions of its own is given: a factory of them
# (``transaction`` below, or a test's).
Transaction = Callable[[], AbstractContextManager[Session]]


def after_commit(session: Session, action: Callable[[], None]) -> None:
    """Run ``action`` once the edge has committed ``session`` (used to publish messages)."""
    session.info.setdefault(AFTER_COMMIT_KEY, []).append(action)


def run_after_commit_actions(session: Session) -> None:
    """Run the actions queued with after_commit; a failing one is logged, not raised."""
    actions: list[Callable[[], None]] = session.info.pop(AFTER_COMMIT_KEY, [])
    for action in actions:
        try:
            action()
        except Exception:
            # The rows are committed; beat's tick re-drives whatever this message would have
            # started, so a broker hiccup here delays work but never loses it.
            log.exception("after-commit action failed; beat will re-drive the work")


@contextmanager
def transaction(snapshot: bool = False) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error, then run after-commit actions.

    With ``snapshot`` every statement sees the database as of the first one (REPEATABLE READ):
    a read of a batch's counters and then of its recipients can never show a recipient final
    that the counters do not count yet. Meant for reads: PostgreSQL never fails a read-only
    REPEATABLE READ transaction, while a write there may meet a serialization failure."""
    session = new_session()
    if snapshot:
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        session.info.pop(AFTER_COMMIT_KEY, None)
        raise
    finally:
        session.close()
    run_after_commit_actions(session)


def migrate(database_url: str | None = None) -> None:
    """Bring the schema to the newest migration (alembic upgrade head)."""
    from alembic import command
    from alembic.config import Config

    root = Path(__file__).resolve().parent.parent
    config = Config(str(root / "alembic.ini"))
    config.set_main_option("script_location", str(root / "migrations"))
    url = with_database_driver(database_url or get_settings().database_url)
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    command.upgrade(config, "head")
