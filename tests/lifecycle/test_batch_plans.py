"""Every batch transition and the status sets, decided by the pure plans."""

from __future__ import annotations

import typing

import pytest

from shared import schemas
from shared.lifecycle import plans, states
from shared.lifecycle.plans import Control, RunState
from shared.lifecycle.states import BatchStatus as B
from shared.lifecycle.states import CallStatus as S


@pytest.mark.parametrize(
    ("status", "paused", "state"),
    [
        (None, False, RunState.MISSING),
        (B.PENDING, False, RunState.NOT_STARTED),
        (B.PENDING, True, RunState.PAUSED),
        (B.IN_PROGRESS, False, RunState.RUNNING),
        (B.IN_PROGRESS, True, RunState.PAUSED),
        (B.CANCELLED, True, RunState.CANCELLED),
        (B.COMPLETED, False, RunState.ENDED),
        (B.FAILED, False, RunState.ENDED),
    ],
)
def test_run_state(status, paused, state):
    assert plans.run_state(status, paused) is state


def test_a_batch_starts_in_progress_or_completed_when_nothing_is_left_to_call():
    assert plans.status_on_start(False) == B.IN_PROGRESS
    assert plans.status_on_start(True) == B.COMPLETED


@pytest.mark.parametrize("status", list(B))
def test_cancel(status):
    plan = plans.plan_cancel(status)
    expected = {
        B.PENDING: Control.APPLY,
        B.IN_PROGRESS: Control.APPLY,
        B.CANCELLED: Control.NOTHING,
        B.COMPLETED: Control.REFUSE,
        B.FAILED: Control.REFUSE,
    }[status]
    assert plan.control is expected
    assert (expected is Control.REFUSE) == bool(plan.reason)


@pytest.mark.parametrize("status", list(B))
@pytest.mark.parametrize("paused", [False, True])
def test_pause(status, paused):
    plan = plans.plan_pause(status, paused)
    if status in states.BATCH_OPEN:
        assert plan.control is (Control.NOTHING if paused else Control.APPLY)
    else:
        assert plan.control is Control.REFUSE and str(status) in plan.reason


def test_resume():
    assert plans.plan_resume(True).control is Control.APPLY
    assert plans.plan_resume(False).control is Control.NOTHING


@pytest.mark.parametrize("status", list(B))
def test_manual_retry(status):
    plan = plans.plan_manual_retry(status)
    refused = status in (B.PENDING, B.CANCELLED)
    assert plan.control is (Control.REFUSE if refused else Control.APPLY)


@pytest.mark.parametrize("status", list(B))
def test_only_an_open_batch_can_fail(status):
    assert plans.can_fail(status) == (status in (B.PENDING, B.IN_PROGRESS))


def test_an_orphan_ends_as_its_batch_s_pending_calls_did():
    assert plans.orphan_move(B.CANCELLED) is plans.CANCEL_PENDING
    assert plans.orphan_move(B.FAILED) is plans.ABANDON_PENDING


def test_the_status_sets():
    assert {S.COMPLETED, S.FAILED, S.VOICEMAIL, S.CANCELLED} == states.FINAL
    assert {S.COMPLETED, S.FAILED, S.VOICEMAIL} == states.FINISHED
    assert {S.DISPATCHED, S.INITIATED, S.IN_PROGRESS} == states.AT_PROVIDER
    assert states.AT_PROVIDER | {S.DIALING} == states.LIVE
    assert {B.COMPLETED, B.FAILED, B.CANCELLED} == states.BATCH_ENDED
    assert states.SQL_LIVE == "('dialing', 'dispatched', 'in_progress', 'initiated')"
    assert states.public_status("dialing") == "pending"
    assert states.public_status("completed") == "completed"


def test_the_api_shows_every_public_status_and_no_other():
    assert set(typing.get_args(schemas.BatchStatus)) == {str(s) for s in B}
    public = {states.public_status(s) for s in S}
    assert set(typing.get_args(schemas.RecipientStatus)) == public
