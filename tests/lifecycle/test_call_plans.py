"""Every call transition, decided by the pure plans: no database, no stack."""

from __future__ import annotations

import pytest

from shared.lifecycle import plans
from shared.lifecycle.plans import (
    CallSnapshot,
    CounterDeltas,
    ProviderUpdate,
    RetryPolicy,
    plan_dial_failure,
    plan_provider_update,
    plan_skip,
)
from shared.lifecycle.states import CallStatus as S
from shared.lifecycle.states import Outcome

FINAL_REPORTS = {
    S.COMPLETED: Outcome.ANSWERED,
    S.FAILED: Outcome.BUSY,
    S.VOICEMAIL: Outcome.VOICEMAIL,
    S.CANCELLED: Outcome.CANCELED,
}


def snap(
    status: S,
    sid: str | None = None,
    first: bool = False,
    attempts: int = 0,
    retry: RetryPolicy | None = None,
    **kw,
) -> CallSnapshot:
    return CallSnapshot(
        status=status,
        provider_call_sid=sid,
        first_dispatched=first,
        attempts=attempts,
        retry=retry or RetryPolicy(),
        **kw,
    )


def report(status: S, sid: str = "CA1", outcome: Outcome | None = None, **kw) -> ProviderUpdate:
    if outcome is None:
        outcome = FINAL_REPORTS.get(status)
    return ProviderUpdate(
        sid=sid, status=status, provider_status=str(status), outcome=outcome, **kw
    )


def test_acceptance_counts_dispatched_once_per_recipient():
    first = plan_provider_update(snap(S.DIALING), report(S.DISPATCHED))
    assert first is not None and first.accepted and first.counts_attempt
    assert first.deltas == CounterDeltas(dispatched=1)
    again = plan_provider_update(snap(S.DIALING, first=True, attempts=1), report(S.DISPATCHED))
    assert again is not None and again.deltas == CounterDeltas(retries=1)


@pytest.mark.parametrize("final", list(FINAL_REPORTS))
def test_a_final_report_counts_final_once_and_finished_unless_cancelled(final: S):
    plan = plan_provider_update(snap(S.IN_PROGRESS, "CA1", True, 1), report(final))
    assert plan is not None and plan.to_status == final and plan.final and plan.ends_attempt
    assert plan.deltas == CounterDeltas(finished=0 if final == S.CANCELLED else 1, final=1)
    assert plan.releases_slot and not plan.counts_attempt


@pytest.mark.parametrize("final", list(FINAL_REPORTS))
@pytest.mark.parametrize("late", [S.DISPATCHED, S.INITIATED, S.IN_PROGRESS, *FINAL_REPORTS])
def test_nothing_moves_a_final_call(final: S, late: S):
    assert plan_provider_update(snap(final, "CA1", True, 1), report(late)) is None


def test_reports_only_move_forward():
    assert plan_provider_update(snap(S.IN_PROGRESS, "CA1", True, 1), report(S.INITIATED)) is None
    assert plan_provider_update(snap(S.INITIATED, "CA1", True, 1), report(S.INITIATED)) is None
    skip = plan_provider_update(snap(S.DISPATCHED, "CA1", True, 1), report(S.COMPLETED))
    assert skip is not None and skip.to_status == S.COMPLETED


def test_a_call_moves_through_initiated_when_asked_for_and_past_it_when_not():
    initiated = plan_provider_update(snap(S.DISPATCHED, "CA1", True, 1), report(S.INITIATED))
    assert initiated is not None and initiated.to_status == S.INITIATED
    assert not initiated.deltas.any() and not initiated.releases_slot
    direct = plan_provider_update(snap(S.DISPATCHED, "CA1", True, 1), report(S.IN_PROGRESS))
    assert direct is not None and direct.to_status == S.IN_PROGRESS and not direct.deltas.any()


def test_a_report_about_another_attempt_is_ignored():
    assert (
        plan_provider_update(snap(S.INITIATED, "CA1", True, 1), report(S.COMPLETED, "CA2")) is None
    )
    earlier = snap(S.DIALING, None, True, 1, previous_sids=frozenset({"CA1"}))
    assert plan_provider_update(earlier, report(S.COMPLETED, "CA1")) is None


def test_a_callback_before_the_dial_answer_records_acceptance():
    plan = plan_provider_update(snap(S.DIALING), report(S.INITIATED, "CA9"))
    assert plan is not None and plan.accepted and plan.deltas.dispatched == 1


def test_a_pending_call_takes_no_report():
    assert plan_provider_update(snap(S.PENDING), report(S.COMPLETED)) is None


def test_a_retried_outcome_requeues_until_the_attempts_run_out():
    policy = RetryPolicy(max_attempts=3, retry_on=frozenset({Outcome.BUSY}), delays_s=(60, 600))
    first = plan_provider_update(snap(S.DISPATCHED, "CA1", True, 1, policy), report(S.FAILED))
    assert first is not None and first.to_status == S.PENDING and first.requeue_delay_s == 60
    assert not first.final and first.ends_attempt and first.releases_slot
    assert not first.deltas.any()
    second = plan_provider_update(
        snap(S.DISPATCHED, "CA2", True, 2, policy), report(S.FAILED, "CA2")
    )
    assert second is not None and second.requeue_delay_s == 600
    last = plan_provider_update(snap(S.DISPATCHED, "CA3", True, 3, policy), report(S.FAILED, "CA3"))
    assert last is not None and last.to_status == S.FAILED and last.deltas.finished == 1


def test_a_retry_answered_straight_away_counts_the_attempt_and_its_retry():
    policy = RetryPolicy(max_attempts=3, retry_on=frozenset({Outcome.NO_ANSWER}))
    plan = plan_provider_update(
        snap(S.DIALING, None, True, 1, policy), report(S.FAILED, outcome=Outcome.NO_ANSWER)
    )
    assert plan is not None and plan.to_status == S.PENDING and plan.counts_attempt
    assert plan.deltas == CounterDeltas(retries=1)


def test_an_outcome_the_policy_does_not_retry_is_final():
    policy = RetryPolicy(max_attempts=3, retry_on=frozenset({Outcome.BUSY}))
    plan = plan_provider_update(snap(S.IN_PROGRESS, "CA1", True, 1, policy), report(S.COMPLETED))
    assert plan is not None and plan.to_status == S.COMPLETED


def test_a_machine_verdict_recorded_earlier_makes_the_completed_call_a_voicemail():
    call = snap(S.IN_PROGRESS, "CA1", True, 1, answered_by="machine_end_beep")
    update = plans.in_light_of(call, report(S.COMPLETED))
    assert (update.status, update.outcome) == (S.VOICEMAIL, Outcome.VOICEMAIL)
    left = plans.in_light_of(
        snap(S.IN_PROGRESS, "CA1", True, 1, voicemail_action="message_left"), update
    )
    assert left.outcome == Outcome.VOICEMAIL_MESSAGE_LEFT
    person = plans.in_light_of(snap(S.IN_PROGRESS, answered_by="human"), report(S.COMPLETED))
    assert person.status == S.COMPLETED


def test_a_dial_the_provider_refused_is_an_attempt():
    failed = plan_dial_failure(snap(S.DIALING), provider_answered=True)
    assert failed is not None and failed.to_status == S.FAILED and failed.counts_attempt
    assert failed.deltas == CounterDeltas(finished=1, final=1) and failed.ends_attempt
    retried = plan_dial_failure(snap(S.DIALING, None, True, 1), provider_answered=True)
    assert retried is not None and retried.deltas.retries == 1


def test_a_call_never_dialed_fails_without_an_attempt():
    failed = plan_dial_failure(snap(S.DIALING), provider_answered=False)
    assert failed is not None and not failed.counts_attempt and not failed.ends_attempt
    assert failed.deltas == CounterDeltas(finished=1, final=1) and failed.releases_slot
    assert plan_dial_failure(snap(S.DISPATCHED, "CA1"), provider_answered=True) is None


def test_a_skipped_claim_is_cancelled_final_and_not_finished():
    skipped = plan_skip(snap(S.DIALING))
    assert skipped is not None and skipped.to_status == S.CANCELLED
    assert skipped.deltas == CounterDeltas(final=1) and not skipped.counts_attempt
    assert plan_skip(snap(S.PENDING)) is None


def test_claim_and_release_move_no_counter():
    assert (plans.CLAIM.from_status, plans.CLAIM.to_status) == (S.PENDING, S.DIALING)
    assert (plans.RELEASE.from_status, plans.RELEASE.to_status) == (S.DIALING, S.PENDING)
    assert not plans.CLAIM.deltas.any() and not plans.RELEASE.deltas.any()
    assert plans.RELEASE.releases_slot and not plans.CLAIM.releases_slot


def test_bulk_moves_count_per_call():
    assert plans.CANCEL_PENDING.deltas(3) == CounterDeltas(final=3)
    assert plans.ABANDON_PENDING.deltas(2) == CounterDeltas(finished=2, final=2)
    assert plans.MANUAL_RETRY.deltas(4) == CounterDeltas(finished=-4, final=-4)
    assert plans.MANUAL_RETRY.outcomes == {Outcome.BUSY, Outcome.NO_ANSWER, Outcome.CALL_FAILED}
    assert plans.CANCEL_PENDING.outcome == Outcome.BATCH_CANCELLED
    assert plans.ABANDON_PENDING.outcome == Outcome.BATCH_FAILED


def test_a_call_excluded_at_submit_is_cancelled_with_its_reason():
    assert plans.status_at_submit(None) == (S.PENDING, None)
    assert plans.status_at_submit(Outcome.DNC) == (S.CANCELLED, Outcome.DNC)


def test_counter_deltas_add_and_multiply():
    one = CounterDeltas(dispatched=1, finished=1, retries=0, final=1)
    assert one.plus(CounterDeltas(retries=2)) == CounterDeltas(1, 1, 2, 1)
    assert one.times(3) == CounterDeltas(3, 3, 0, 3)
    assert not CounterDeltas().any()


def test_a_retry_policy_reads_its_api_form():
    policy = RetryPolicy.from_json(
        {"max_attempts": 3, "retry_on": ["voicemail", "busy"], "delays_s": [30, 90]}
    )
    assert policy.retry_on == {Outcome.VOICEMAIL, Outcome.VOICEMAIL_MESSAGE_LEFT, Outcome.BUSY}
    assert [policy.delay_after(n) for n in (1, 2, 3)] == [30, 90, 90]
    assert RetryPolicy.from_json(None) == RetryPolicy()


def test_a_report_of_refused_credentials_fails_the_batch_and_no_other_does():
    refused = report(
        S.FAILED, outcome=Outcome.PROVIDER_AUTH_FAILED, error_message="SIP 407 Proxy Auth"
    )
    assert plans.batch_failure(refused) == "provider rejected the credentials: SIP 407 Proxy Auth"
    for status, outcome in FINAL_REPORTS.items():
        assert plans.batch_failure(report(status, outcome=outcome)) is None
    # The refused call itself ends failed, counted once, never dialed again by a retry policy.
    retrying = RetryPolicy.from_json(
        {"max_attempts": 3, "retry_on": ["busy", "no_answer", "failed", "voicemail"]}
    )
    call = snap(S.DISPATCHED, "CA1", first=True, attempts=1, retry=retrying)
    transition = plan_provider_update(call, refused)
    assert transition is not None and transition.to_status == S.FAILED
    assert transition.deltas == CounterDeltas(finished=1, final=1)
