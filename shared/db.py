"""Engine, sessions and the transaction boundary that the edges (requests, tasks) own."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from shared.settings import get_settings

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
def transaction() -> Iterator[Session]:
    """One unit of work: commit on success, roll back on error, then run after-commit actions."""
    session = new_session()
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
    config.set_main_option(
        "sqlalchemy.url", (database_url or get_settings().database_url).replace("%", "%%")
    )
    command.upgrade(config, "head")
