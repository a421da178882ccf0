from shared import callstate
from shared.callstate import CallSnapshot, ProviderUpdate, from_twilio, plan_provider_update


def snap(status: str, sid: str | None = None, first: bool = False, attempts: int = 0):
    return CallSnapshot(
        status=status, provider_call_sid=sid, first_dispatched=first, attempts=attempts
    )


def update(status: str, sid: str = "CA1", **kw) -> ProviderUpdate:
    result = from_twilio(sid, status, **kw)
    assert result is not None
    return result


def test_acceptance_counts_dispatched_once_per_recipient():
    first = plan_provider_update(snap("dialing"), update("queued"))
    assert first is not None and first.accepted and first.deltas.dispatched == 1
    again = plan_provider_update(snap("dialing", first=True, attempts=1), update("queued"))
    assert again is not None and again.deltas.dispatched == 0 and again.deltas.retries == 1


def test_final_callback_counts_finished_once_and_never_moves_back():
    done = plan_provider_update(snap("in_progress", "CA1", True, 1), update("completed"))
    assert done is not None and done.to_status == "completed"
    assert (done.deltas.finished, done.deltas.final) == (1, 1)
    for late in ("completed", "ringing", "in-progress", "busy"):
        assert plan_provider_update(snap("completed", "CA1", True, 1), update(late)) is None


def test_out_of_order_reports_only_move_forward():
    assert plan_provider_update(snap("in_progress", "CA1", True, 1), update("ringing")) is None
    skip = plan_provider_update(snap("dispatched", "CA1", True, 1), update("completed"))
    assert skip is not None and skip.to_status == "completed"


def test_a_call_moves_through_initiated_when_asked_for_and_past_it_when_not():
    initiated = plan_provider_update(snap("dispatched", "CA1", True, 1), update("initiated"))
    assert initiated is not None and initiated.to_status == "initiated"
    assert not initiated.deltas.any()
    answered = plan_provider_update(snap("initiated", "CA1", True, 1), update("in-progress"))
    assert answered is not None and answered.to_status == "in_progress"
    # Without the initiated event (the default), the answer moves a dispatched call.
    direct = plan_provider_update(snap("dispatched", "CA1", True, 1), update("in-progress"))
    assert direct is not None and direct.to_status == "in_progress"
    assert not direct.deltas.any()


def test_report_about_another_attempt_is_ignored():
    assert (
        plan_provider_update(snap("initiated", "CA1", True, 1), update("completed", "CA2")) is None
    )


def test_early_callback_before_dial_result_records_acceptance():
    # The provider's callback can beat the dial task's own write of the SID.
    plan = plan_provider_update(snap("dialing"), update("ringing", "CA9"))
    assert plan is not None and plan.accepted and plan.deltas.dispatched == 1


def test_twilio_statuses_map_to_outcomes():
    assert update("busy").outcome == callstate.OUTCOME_BUSY
    assert update("no-answer").outcome == callstate.OUTCOME_NO_ANSWER
    assert update("completed", answered_by="machine_end_beep").status == callstate.VOICEMAIL
    assert update("completed", answered_by="human").status == callstate.COMPLETED
    assert from_twilio("CA1", "something-new") is None


def test_cancelled_is_final_but_not_finished():
    plan = plan_provider_update(snap("initiated", "CA1", True, 1), update("canceled"))
    assert plan is not None and plan.to_status == "cancelled"
    assert (plan.deltas.finished, plan.deltas.final) == (0, 1)


def test_dial_failure_and_release():
    failed = callstate.plan_dial_failure(snap("dialing"), callstate.FAILED)
    assert failed is not None and failed.counts_attempt and failed.deltas.finished == 1
    released = callstate.plan_dial_failure(snap("dialing"), callstate.PENDING)
    assert released is not None and not released.counts_attempt and not released.deltas.any()
    assert callstate.plan_dial_failure(snap("dispatched", "CA1"), callstate.FAILED) is None
