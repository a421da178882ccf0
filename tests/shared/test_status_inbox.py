"""The status inbox on a real database: written in one statement, claimed for re-driving once
per period with SKIP LOCKED, and published again in messages that shrink while they fail."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session

from shared import messaging
from shared.db import run_after_commit_actions
from shared.repositories import status_inbox as inbox_repo
from shared.repositories.status_inbox import UnappliedReport
from shared.services import status_inbox as inbox_service
from tests.support import create_database, drop_database


@pytest.fixture
def engine(service_urls: tuple[str, str], template_database: str) -> Iterator[Engine]:
    """A database of its own: no stack's tick re-drives its rows."""
    server_url, _ = service_urls
    name = f"sbtest_inbox_{uuid.uuid4().hex[:8]}"
    engine = create_engine(create_database(server_url, name, template_database))
    yield engine
    engine.dispose()
    drop_database(server_url, name)


def report(n: int) -> tuple[str, dict[str, Any]]:
    # As the API queues a status report (shared/telephony/reports.py).
    return (
        f"call_{n}",
        {
            "kind": "status",
            "sid": f"CA{n}",
            "status": "completed",
            "provider_status": "completed",
            "outcome": "answered",
            "duration_s": n,
        },
    )


def backdate(engine: Engine, seconds: int) -> None:
    with Session(engine) as session, session.begin():
        session.execute(
            text("UPDATE status_inbox SET published_at = now() - make_interval(secs => :s)"),
            {"s": seconds},
        )


def inbox(engine: Engine) -> list[Any]:
    with Session(engine) as session:
        return list(
            session.execute(
                text("SELECT id, call_id, report, redrives FROM status_inbox ORDER BY id")
            )
        )


def test_a_window_is_written_in_one_statement_and_committed_on_its_own(engine: Engine):
    ids = inbox_repo.add_reports([report(1), report(2), report(3)], engine)
    assert len(set(ids)) == 3
    rows = inbox(engine)
    assert sorted(ids) == [row.id for row in rows]
    assert {(row.call_id, row.report["duration_s"]) for row in rows} == {
        ("call_1", 1),
        ("call_2", 2),
        ("call_3", 3),
    }
    assert inbox_repo.add_reports([], engine) == []


def test_unapplied_reports_are_claimed_once_per_period_and_ticks_split_them(engine: Engine):
    ids = sorted(inbox_repo.add_reports([report(n) for n in range(3)], engine))
    with Session(engine) as session, session.begin():
        assert inbox_repo.claim_unapplied(session, 60, 100) == []  # just published
    backdate(engine, 120)
    with Session(engine) as first, first.begin(), Session(engine) as second, second.begin():
        claimed_first = inbox_repo.claim_unapplied(first, 60, 2)
        claimed_second = inbox_repo.claim_unapplied(second, 60, 100)  # skips the locked two
    assert [r.id for r in claimed_first] == ids[:2]
    assert [r.id for r in claimed_second] == ids[2:]
    assert claimed_first[0] == UnappliedReport(ids[0], "call_0", report(0)[1], 0)
    with Session(engine) as session, session.begin():
        assert inbox_repo.claim_unapplied(session, 60, 100) == []  # stamped: not again yet
    backdate(engine, 120)
    with Session(engine) as session, session.begin():
        again = inbox_repo.claim_unapplied(session, 60, 100)
    assert [(r.id, r.earlier_redrives) for r in again] == [(i, 1) for i in ids]
    with Session(engine) as session, session.begin():
        inbox_repo.delete_reports(session, ids[:2])
    assert [row.id for row in inbox(engine)] == ids[2:]


def test_redriven_reports_go_out_after_commit_in_messages_of_at_most_the_window_size(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
):
    ids = sorted(inbox_repo.add_reports([report(n) for n in range(150)], engine))
    backdate(engine, 120)
    published: list[list[Any]] = []
    waiting = {"status": 1}
    monkeypatch.setattr(messaging, "queue_length", lambda queue: waiting[queue])
    monkeypatch.setattr(
        messaging, "publish_many", lambda task, args: published.extend((task, a) for a in args)
    )
    with Session(engine) as session, session.begin():
        # Messages are waiting in the status queue: a report's may be among them.
        assert inbox_service.redrive_status_inbox(session, 60) == 0
    waiting["status"] = 0
    with Session(engine) as session:
        with session.begin():
            assert inbox_service.redrive_status_inbox(session, 60) == 150
            assert published == []  # not before the commit
        run_after_commit_actions(session)
    assert [task for task, _ in published] == [messaging.TASK_APPLY_STATUSES] * 2
    messages = [args for _, args in published]
    assert [len(reports) for reports, _ in messages] == [100, 50]
    assert [i for _, message_ids in messages for i in message_ids] == ids
    assert messages[0][0][0] == ("call_0", report(0)[1])
    assert {row.redrives for row in inbox(engine)} == {1}


def test_reports_that_keep_failing_are_re_driven_in_ever_smaller_messages():
    def claimed(count: int, earlier: int, start: int) -> list[UnappliedReport]:
        return [UnappliedReport(start + n, "c", {}, earlier) for n in range(count)]

    messages = inbox_service.redrive_messages(
        claimed(250, 0, 0) + claimed(60, 1, 1000) + claimed(3, 9, 2000), 100
    )
    assert [len(ids) for _, ids in messages] == [100, 100, 50, 50, 10, 1, 1, 1]
    assert messages[3][1] == list(range(1000, 1050))
