"""Statements prepared once per connection."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from shared.db import PreparedStatement
from shared.settings import get_settings
from tests.support import Stack

TOTAL = PreparedStatement(
    "switchboard_test_total",
    "SELECT :a + :b * :a AS total",
    (("a", "integer"), ("b", "integer")),
)


@pytest.fixture
def engine(stack: Stack) -> Iterator[Engine]:
    engine = create_engine(stack.database_url, pool_size=1, max_overflow=0)
    yield engine
    engine.dispose()


def prepared_names(session: Session) -> list[str]:
    return list(session.execute(text("SELECT name FROM pg_prepared_statements")).scalars())


def test_prepared_on_first_use_and_kept_through_rollbacks(engine: Engine):
    with Session(engine) as session:
        assert session.execute(TOTAL.statement(session), {"a": 2, "b": 3}).scalar_one() == 8
        session.rollback()  # a rollback does not undo PREPARE
        assert session.execute(TOTAL.statement(session), {"a": 1, "b": 1}).scalar_one() == 2
        assert prepared_names(session) == ["switchboard_test_total"]
    with Session(engine) as session:  # the same pooled connection: prepared already
        assert session.execute(TOTAL.statement(session), {"a": 3, "b": 0}).scalar_one() == 3
        assert prepared_names(session) == ["switchboard_test_total"]


def test_plain_statements_when_settings_turn_preparing_off(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(get_settings(), "db_prepared_statements", False)
    with Session(engine) as session:
        assert session.execute(TOTAL.statement(session), {"a": 2, "b": 3}).scalar_one() == 8
        assert prepared_names(session) == []


def test_run_alone_commits_on_its_own_and_leaves_the_connection_transactional(engine: Engine):
    with Session(engine) as session:
        session.execute(text("CREATE TABLE alone_test (n integer)"))
        session.commit()
    inserted = PreparedStatement(
        "switchboard_test_insert",
        "INSERT INTO alone_test VALUES (:n) RETURNING n * 10 AS tenfold, 'a%b' AS text",
        (("n", "integer"),),
    )
    rows = inserted.run_alone({"n": 4}, engine)
    assert [(row.tenfold, row.text) for row in rows] == [(40, "a%b")]
    # The same pooled connection, back in a transaction: a rollback undoes the insert.
    with Session(engine) as session:
        session.execute(text("INSERT INTO alone_test VALUES (5)"))
        assert prepared_names(session) == ["switchboard_test_insert"]
        session.rollback()
        assert list(session.execute(text("SELECT n FROM alone_test")).scalars()) == [4]


def test_run_alone_raises_sqlalchemy_errors_and_the_pool_stays_usable(engine: Engine):
    failing = PreparedStatement("switchboard_test_fail", "SELECT 1 / :d AS q", (("d", "integer"),))
    with pytest.raises(DBAPIError):
        failing.run_alone({"d": 0}, engine)
    assert failing.run_alone({"d": 1}, engine)[0].q == 1
    with Session(engine) as session:
        assert session.execute(text("SELECT 2")).scalar_one() == 2


def test_run_alone_as_a_plain_statement_when_settings_turn_preparing_off(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(get_settings(), "db_prepared_statements", False)
    matched = PreparedStatement(
        "switchboard_test_like",
        "SELECT :word LIKE 'sw%' AS matches, :word || '%' AS pattern",
        (("word", "text"),),
    )
    row = matched.run_alone({"word": "switchboard"}, engine)[0]
    assert (row.matches, row.pattern) == (True, "switchboard%")
    with Session(engine) as session:
        assert prepared_names(session) == []


@pytest.fixture
def stack_database(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The process-wide engine bound to the stack's database for the test."""
    from shared import db

    monkeypatch.setenv("DATABASE_URL", stack.database_url)
    get_settings.cache_clear()
    db.reset_engine()
    yield
    db.reset_engine()
    monkeypatch.undo()
    get_settings.cache_clear()


def test_a_snapshot_transaction_sees_one_moment_and_a_plain_one_sees_each_commit(
    stack_database: None, engine: Engine
):
    from shared.db import transaction

    count = text("SELECT count(*) FROM workspaces")

    def add_workspace() -> None:  # committed by another connection between two reads
        with engine.begin() as connection:
            connection.execute(
                text(
                    "INSERT INTO workspaces (id, name) "
                    "VALUES (gen_random_uuid()::text, gen_random_uuid()::text)"
                )
            )

    with transaction(snapshot=True) as session:
        assert session.execute(text("SHOW transaction_isolation")).scalar() == "repeatable read"
        before = session.execute(count).scalar_one()
        add_workspace()
        assert session.execute(count).scalar_one() == before
    with transaction() as session:
        assert session.execute(text("SHOW transaction_isolation")).scalar() == "read committed"
        before = session.execute(count).scalar_one()
        add_workspace()
        assert session.execute(count).scalar_one() == before + 1
