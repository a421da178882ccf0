"""Placing calls and driving them to a final state from provider reports."""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import quoteattr

from redis.exceptions import RedisError
from sqlalchemy.orm import Session

from shared import messaging, metrics, provider_outage, slots
from shared.db import after_commit
from shared.errors import NotFound, ProviderError
from shared.lifecycle import store
from shared.lifecycle.plans import ProviderUpdate, RunState
from shared.lifecycle.states import LIVE, BatchStatus, CallStatus, Outcome
from shared.lifecycle.transitions import (
    MachineVerdict,
    apply_provider_reports,
    apply_provider_update,
    fail_batch,
    fail_claimed_call,
    hand_back,
    skip_claimed_call,
)
from shared.ratelimit import Limit, Reservation, reserve
from shared.repositories import batches as batches_repo
from shared.repositories import calls as calls_repo
from shared.schemas import AgentConfigResponse
from shared.services import webhooks
from shared.settings import get_settings
from shared.telephony.base import DialRequest
from shared.telephony.twilio import (
    connect_agent_detection,
    from_twilio,
    from_twilio_report,
    provider_for,
)
from shared.templates import render, render_tree
from shared.urls import (
    agent_config_url,
    twilio_amd_callback_url,
    twilio_status_callback_url,
    twilio_twiml_url,
)
from shared.voicemail import ACTION_TAKEN, MachineAction, detection_for, plan_machine_action
from shared.windows import CallingWindow, recipient_zones

log = logging.getLogger(__name__)

Transaction = Callable[[], AbstractContextManager[Session]]

# A call whose pacing could not be reserved (Redis unreachable) is handed back, due again
# after this long. A dial the provider did not process (429, 5xx, unreachable) is handed back
# after a delay that grows with its batch's run of them, and pauses the batch once that run
# is long enough (shared/provider_outage.py).
TRANSIENT_RETRY_DELAY_S = 15.0
# A call that found every concurrency slot taken is due again after:
SLOT_RETRY_DELAY_S = 1.0
# A dial paced a second or more away reads its batch's status this long before its slot:
PACING_CHECK_LEAD_S = 0.5
# The dial's fence against cancel and pause: a provider request goes out only within this
# long of the last moment its batch was seen running (the claim, or a later read), else the
# batch is read again first (when less than FENCE_REFRESH_S of the window is left) or the
# request is not sent at all. A cancel or pause answers only DIAL_FENCE_S after it committed,
# so no request can go out after the answer: one sent later would need a read of the batch
# made after the commit, which sees it stopped.
DIAL_SEND_WINDOW_S = 0.75
FENCE_REFRESH_S = 0.25
DIAL_FENCE_S = 1.0
# A dial that wakes later than this after its pacing slot takes a new slot (at most
# PACING_ATTEMPTS slots; then the call is handed back, due at once):
PACING_LATE_S = 0.05
PACING_ATTEMPTS = 4
# The provider's answers to the dials of one message are recorded together, at the latest
# this long after the first of them came (a call's status callbacks may come first; they
# are applied all the same):
ANSWERS_RECORDED_WITHIN_S = 1.0


@dataclass
class _Fence:
    """When a dial last saw its batch running (``time.monotonic()`` taken before the read)."""

    batch_id: str
    seen_running_at: float

    @property
    def send_before(self) -> float:
        """The moment after which the dial's request may not be sent."""
        return self.seen_running_at + DIAL_SEND_WINDOW_S

    def check(self) -> RunState:
        """Read the batch now: running (the fence moves on), or why not."""
        started = time.monotonic()
        state = batches_repo.run_state_now(self.batch_id)
        if state is RunState.RUNNING:
            self.seen_running_at = started
        return state

    def fresh(self) -> RunState:
        """Running while the window has time left, else ``check()``."""
        if time.monotonic() < self.send_before - FENCE_REFRESH_S:
            return RunState.RUNNING
        return self.check()


# A report the API queues for an answering machine detection callback (not a status one).
MACHINE_VERDICT_EVENT = "amd"


def machine_verdicts(reports: list[tuple[str, dict[str, Any]]]) -> list[MachineVerdict]:
    """The answering machine detection verdicts among the reports the API queued."""
    return [
        MachineVerdict(call_id, report.get("sid") or "", report.get("answered_by") or "")
        for call_id, report in reports
        if report.get("event") == MACHINE_VERDICT_EVENT
    ]


def twilio_updates(reports: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, ProviderUpdate]]:
    """The status reports the API queued (call id, report), in our terms; reports of statuses
    we do not know are logged and left out, as are detection verdicts (``machine_verdicts``)."""
    updates = []
    for call_id, report in reports:
        if report.get("event") == MACHINE_VERDICT_EVENT:
            continue
        update = from_twilio_report(report)
        if update is None:
            log.info("ignoring provider status %r for %s", report["status"], call_id)
        else:
            updates.append((call_id, update))
    return updates


def dial_call(call_id: str, transaction: Transaction) -> str:
    """Claim, render and place one call; returns what happened, for logs, tests and metrics."""
    return dial_calls([call_id], transaction)[0]


def dial_calls(call_ids: list[str], transaction: Transaction) -> list[str]:
    """Claim, render and place these calls one after another; what happened to each.

    The prompts are rendered first, from the calls' client data and templates read at once
    (both fixed at submit). Each call then takes its live-call slot in Redis (and its pacing
    slot with it, when it is to be paced: a running batch, a number, inside its calling
    window), and is claimed in a short transaction of its own (storing its rendered
    prompt) right before it waits for that pacing slot and is placed, outside any
    transaction. A call without a free slot is not claimed at all: it waits
    ``SLOT_RETRY_DELAY_S`` as a call never published, for the tick; nor is one whose pacing
    slot is too far away, which waits for it. The provider's answers are
    recorded together, in one transaction, once every call is placed or once the oldest
    unrecorded answer is ``ANSWERS_RECORDED_WITHIN_S`` old; the calls not claimed are put
    back in the last of these transactions. An answer lost with the process leaves its call
    claimed: the tick reconciles it with the provider, as it does any dial whose answer never
    came.
    """
    results: list[str] = []
    answers: list[tuple[str, ProviderUpdate]] = []
    unclaimed: list[_Unclaimed] = []
    oldest = 0.0
    with transaction() as session:
        inputs = calls_repo.render_inputs(session, call_ids)
    try:
        for call_id in call_ids:
            if call_id not in inputs:
                results.append("not_claimed")
                continue
            outcome = _place_call(call_id, inputs[call_id], transaction)
            if isinstance(outcome, _Unclaimed):
                results.append(outcome.result)
                unclaimed.append(outcome)
                continue
            if isinstance(outcome, str):
                results.append(outcome)
                continue
            results.append("dispatched")
            if not answers:
                oldest = time.monotonic()
            answers.append((call_id, outcome))
            if time.monotonic() - oldest >= ANSWERS_RECORDED_WITHIN_S:
                _record_answers(answers, [], transaction)
                answers = []
    finally:  # a later call's failure does not keep the earlier ones' answers from the record
        if answers or unclaimed:
            _record_answers(answers, unclaimed, transaction)
    for result in results:
        metrics.DIALS.labels(result=result).inc()
    return results


def _record_answers(
    answers: list[tuple[str, ProviderUpdate]],
    unclaimed: list[_Unclaimed],
    transaction: Transaction,
) -> None:
    with transaction() as session:
        if answers:
            apply_provider_reports(session, answers)
            # Placed right before their batch was cancelled (within the dial's fence): the
            # cancel may have looked for live calls before these were recorded.
            hang_ups = calls_repo.live_in_cancelled_batches(session, [c for c, _ in answers])
            if hang_ups:
                after_commit(session, lambda: _hang_up_all(hang_ups))
        if unclaimed:
            now = time.monotonic()
            calls_repo.defer_unclaimed(
                session, [(u.call_id, max(u.due_at - now, 0.0)) for u in unclaimed]
            )


def _hang_up_all(call_ids: Sequence[str]) -> None:
    messaging.publish_many(messaging.TASK_HANG_UP, [[call_id] for call_id in call_ids])


def _rendered(inputs: Any) -> tuple[str, str, dict[str, Any] | None]:
    """The call's prompt, first message and override, its dynamic variables filled in."""
    data: dict[str, Any] = inputs.client_data or {}
    variables: dict[str, Any] = data.get("dynamic_variables") or {}
    override = data.get("conversation_config_override")
    agent_override = (override or {}).get("agent") or {}
    prompt = ((agent_override.get("prompt") or {}).get("prompt")) or inputs.prompt_template
    first_message = agent_override.get("first_message") or inputs.first_message_template
    return (
        render(prompt, variables),
        render(first_message, variables),
        render_tree(override, variables) if override else None,
    )


@dataclass(frozen=True)
class _Unclaimed:
    """A call left pending without a claim, due again at ``due_at`` (``time.monotonic()``)."""

    call_id: str
    result: str
    due_at: float


def _place_call(
    call_id: str, inputs: Any, transaction: Transaction
) -> str | _Unclaimed | ProviderUpdate:
    """What happened to the call, or the provider's answer when it was placed."""
    # The live-call slot comes first, from Redis: a call without one is not claimed (no
    # transaction spent on a call that cannot be placed). A standing claim (a dialing call)
    # always holds one; a claim not made, or undone since, gives back a slot taken here. A slot
    # the call already held is another delivery's, whose claim it is: it stays. A call of a
    # running batch that has a number and is inside its calling window (as the message read
    # them) takes its pacing slot in the same step, or nothing when that is too far away. The
    # others take the live-call slot alone and are claimed to be ended or handed back (or
    # paced after the claim, should what was read have changed meanwhile).
    callers = [number for number in inputs.caller_numbers if number]
    to_pace = inputs.running and inputs.phone_number is not None and _outside_window(inputs) is None
    acquired, first = _take_slots(call_id, inputs, callers if to_pace else None, transaction)
    if acquired is slots.Acquired.NONE:
        if first is None:
            return _Unclaimed(call_id, "no_slot", time.monotonic() + SLOT_RETRY_DELAY_S)
        metrics.PACING_HANDED_BACK.inc()
        return _Unclaimed(call_id, "paced", first.made_at + first.wait_s)
    names = slots.slot_names(inputs.batch_id, inputs.workspace_id)
    token = uuid.uuid4().hex
    row = None
    undone: str | None = None
    # The claim takes the call only while its batch runs: the dial's fence starts before it.
    fence = _Fence(inputs.batch_id, time.monotonic())
    try:
        row = store.claim_for_dial(call_id, token, *_rendered(inputs))
        if row is not None:
            undone = _undo_claim_unless_due(row, token, transaction, window_checked=to_pace)
    finally:  # a claim that failed to undo still stands, and keeps its slot
        if (row is None or undone is not None) and acquired is slots.Acquired.TAKEN:
            slots.release(call_id, names)
    if row is None:
        return "not_claimed"
    if undone is not None:
        return undone
    return _place_claimed_call(call_id, row, token, names, callers, first, fence, transaction)


# Undoes a claim that is not to be dialed now, given the session and the claim's token.
_Undo = Callable[[Session, str], object]


def _undo_claim_unless_due(
    row: Any, token: str, transaction: Transaction, window_checked: bool
) -> str | None:
    """None when the claimed call is to be dialed now (nothing more is written); else why not,
    its claim undone in a transaction of its own (a batch cancelled meanwhile ends it)."""
    verdict = _not_to_dial_now(row, window_checked)
    if verdict is None:
        return None
    reason, undo = verdict
    with transaction() as session:
        undo(session, token)
    return reason


def _not_to_dial_now(row: Any, window_checked: bool) -> tuple[str, _Undo] | None:
    """Checked on the claimed row: why the call is not dialed now, and how its claim is undone
    (the calling window, unless it was checked right before the claim)."""
    if row.phone_number is None:
        return "whatsapp_unsupported", lambda session, _: fail_claimed_call(
            session, row.id, Outcome.WHATSAPP_UNSUPPORTED
        )
    if row.do_not_call:
        return "dnc", lambda session, _: skip_claimed_call(session, row.id, Outcome.DNC)
    return (None if window_checked else _outside_window(row)) or _over_frequency_cap(row)


def _place_claimed_call(
    call_id: str,
    row: Any,
    token: str,
    names: list[str],
    callers: list[str],
    first: Reservation | None,
    fence: _Fence,
    transaction: Transaction,
) -> str | ProviderUpdate:
    """Pace (from the reservation taken with the slot, if any) and place a claimed call holding
    its slot: what happened, or the provider's answer. The request goes out only within the
    dial's fence (``_Fence``): a batch cancelled or paused meanwhile stops it."""
    settings = get_settings()
    provider = provider_for(row.credentials_ref)
    paced = _wait_for_pacing(call_id, row, token, callers, first, fence, transaction)
    if isinstance(paced, str):
        slots.release(call_id, names)
        return paced
    stopped = _stopped_before_dial(call_id, token, fence, transaction)
    if stopped is not None:
        slots.release(call_id, names)
        return stopped
    request = DialRequest(
        call_id=call_id,
        to=row.phone_number,
        from_=callers[paced],
        twiml_url=twilio_twiml_url(call_id, settings),
        status_callback_url=twilio_status_callback_url(call_id, settings),
        ringing_timeout_s=ringing_timeout_s(row.telephony_call_config),
        time_limit_s=settings.max_call_duration_s,
        send_before=fence.send_before,
        machine_detection=detection_for(row.voicemail_behavior, connect_agent_detection(settings)),
        machine_detection_callback_url=twilio_amd_callback_url(call_id, settings),
    )
    started = time.perf_counter()
    try:
        placed = provider.place_call(request)
    except ProviderError as error:
        metrics.DIAL_SECONDS.labels(result=metrics.dial_error_result(error)).observe(
            time.perf_counter() - started
        )
        if not error.ambiguous:  # an ambiguous call may be live: its lease keeps the slot
            slots.release(call_id, names)
        with transaction() as session:
            return _record_dial_error(session, call_id, row.batch_id, token, error)
    metrics.DIAL_SECONDS.labels(result=metrics.DIAL_ACCEPTED).observe(time.perf_counter() - started)
    if row.provider_unreachable:
        # The first dials accepted after an outage end the batch's run of unprocessed ones
        # (rare: the claim said a run was under way, so no dial pays this otherwise).
        with transaction() as session:
            batches_repo.clear_unreachable(session, row.batch_id)
    return from_twilio(
        placed.sid, placed.provider_status, from_number=request.from_
    ) or ProviderUpdate(
        sid=placed.sid,
        status=CallStatus.DISPATCHED,
        provider_status=placed.provider_status,
        from_number=request.from_,
    )


def _stopped_before_dial(
    call_id: str, token: str, fence: _Fence, transaction: Transaction
) -> str | None:
    """None when the batch was seen running recently enough for the request to go out within
    the fence; else the claim is undone as the batch's state says: ``cancelled``, or
    ``paused`` (handed back, due at once, for when it resumes)."""
    state = fence.fresh()
    if state is RunState.RUNNING:
        return None
    return _stop_claim(call_id, token, state, transaction)


def _stop_claim(call_id: str, token: str, state: RunState, transaction: Transaction) -> str:
    """Undo the claim of a call whose batch stopped running (``state``, as the fence read
    it): cancelled ends it; otherwise (paused, failed) it is handed back, due at once, and
    ends with a failed batch or waits for a paused one to resume."""
    with transaction() as session:
        if state is RunState.CANCELLED:
            skip_claimed_call(session, call_id, Outcome.BATCH_CANCELLED)
            return "cancelled"
        hand_back(session, call_id, token, 0)
    return "paused"


def _outside_window(row: Any) -> tuple[str, _Undo] | None:
    """Checked when the call is about to be dialed: outside its calling window the call goes
    back to pending, due at the window's next opening; None when it may be dialed now."""
    settings = get_settings()
    window = (
        CallingWindow.from_json(row.calling_window)
        if row.calling_window
        else CallingWindow.from_spec(settings.default_calling_window)
    )
    zones = recipient_zones(row.phone_number, window, row.timezone)
    if not zones:
        return "unknown_time_zone", lambda session, _: skip_claimed_call(
            session, row.id, Outcome.UNKNOWN_TIME_ZONE
        )
    now = datetime.now(UTC)
    opening = window.next_opening(now, zones)
    if opening == now:
        return None
    if opening is None:
        return "window_never_opens", lambda session, _: skip_claimed_call(
            session, row.id, Outcome.OUTSIDE_CALLING_WINDOW
        )
    delay = (opening - now).total_seconds()
    return "outside_window", lambda session, token: hand_back(session, row.id, token, delay)


def _take_slots(
    call_id: str, row: Any, callers: list[str] | None, transaction: Transaction
) -> tuple[slots.Acquired, Reservation | None]:
    """A live-call slot under the workspace cap and the batch's target_concurrency_limit; with
    ``callers``, and in the same step, a pacing slot for one of them (``_pacing_limits``).
    When Redis has lost the slots (it restarted empty), they are rebuilt from PostgreSQL
    first; while another process rebuilds them, nothing is taken."""
    settings = get_settings()
    limits = slots.slot_limits(row.batch_id, row.workspace_id, row.target_concurrency_limit)
    try:
        for _ in range(2):
            if callers is None:
                acquired, reservation = slots.acquire(call_id, limits), None
            else:
                pacing, pool = _pacing_limits(row.credentials_ref, callers)
                acquired, reservation = slots.acquire_and_reserve(
                    call_id, limits, pacing, settings.max_pacing_sleep_s, pool
                )
            if acquired is not slots.Acquired.UNKNOWN:
                return acquired, reservation
            restore_slots(transaction)
    except RedisError as exc:
        log.warning("concurrency slots unavailable for %s: %s", call_id, exc)
    return slots.Acquired.NONE, None


def restore_slots(transaction: Transaction) -> bool:
    """Rebuild the live-call slots in Redis from the calls PostgreSQL has claimed or live, if
    Redis lost them; True when this process rebuilt them."""

    def read_live() -> list[tuple[str, list[str]]]:
        with transaction() as session:
            rows = calls_repo.slot_holders(session)
        return [(row.id, slots.slot_names(row.batch_id, row.workspace_id)) for row in rows]

    def read_ended(call_ids: Sequence[str]) -> set[str]:
        with transaction() as session:
            return calls_repo.not_holding_slots(session, call_ids)

    restored = slots.restore(read_live, read_ended)
    if restored:
        log.warning("live-call slots were lost with Redis's state; rebuilt from PostgreSQL")
    return restored


# A slot held this long by a call that is neither claimed nor live is a leak (a release that
# failed): the audit gives it back. Taking a slot and claiming the call take milliseconds.
SLOT_LEAK_AGE_S = 60.0


def audit_slots(transaction: Transaction) -> int:
    """Give back the slots held by calls that PostgreSQL says are neither claimed nor live
    (pending or final) since longer than ``SLOT_LEAK_AGE_S``; how many calls had such slots."""
    held = slots.held_longer_than(SLOT_LEAK_AGE_S)
    if not held:
        return 0
    with transaction() as session:
        leaked = calls_repo.not_holding_slots(session, list(held))
    slots.release_many([(call_id, held[call_id]) for call_id in sorted(leaked)])
    if leaked:
        log.warning("gave back %d live-call slots of calls that had ended", len(leaked))
    return len(leaked)


def _pacing_limits(credentials_ref: str, callers: list[str]) -> tuple[list[Limit], list[Limit]]:
    """The pacing limits a dial takes a slot under: the provider account's, and one of the
    caller numbers' (the pool of alternatives) when numbers are paced."""
    settings = get_settings()
    account_sid = provider_for(credentials_ref).account.account_sid
    per_number = settings.per_number_pacing
    pool = (
        [Limit(f"number:{number}", per_number, settings.pacing_burst) for number in callers]
        if per_number
        else []
    )
    limits = [
        Limit(
            f"account:{account_sid}", settings.calls_per_second_per_account, settings.pacing_burst
        ),
    ]
    return limits, pool


def _wait_for_pacing(
    call_id: str,
    row: Any,
    token: str,
    callers: list[str],
    first: Reservation | None,
    fence: _Fence,
    transaction: Transaction,
) -> int | str:
    """Take a pacing slot for one of the batch's caller numbers (the one free first) and for
    the provider account, shared by every worker through Redis (``first``, when it was taken
    with the call's live-call slot); the index of the caller number to dial from once the slot
    has come, or what happened instead.

    A slot further away than ``max_pacing_sleep_s`` is not taken: the call goes back to
    pending, due then, rather than holding a worker thread.
    """
    settings = get_settings()
    for _ in range(PACING_ATTEMPTS):
        try:
            if first is not None:
                reservation, first = first, None
            else:
                limits, pool = _pacing_limits(row.credentials_ref, callers)
                reservation = reserve(limits, settings.max_pacing_sleep_s, alternatives=pool)
        except RedisError as exc:
            # Nothing was placed: hand the call back, due shortly, rather than dial unpaced.
            log.warning("pacing unavailable for %s: %s", call_id, exc)
            with transaction() as session:
                hand_back(session, call_id, token, TRANSIENT_RETRY_DELAY_S)
            return "pacing_unavailable"
        if not reservation.reserved:
            metrics.PACING_HANDED_BACK.inc()
            with transaction() as session:
                hand_back(session, call_id, token, reservation.wait_s)
            return "paced"
        metrics.PACING_WAIT_SECONDS.observe(reservation.wait_s)
        slot_at = reservation.made_at + reservation.wait_s
        if reservation.wait_s >= 1.0:
            # The batch may have been cancelled or paused during a long wait: read its status
            # shortly before the slot (the fence moves on to this read), so that the read's
            # own delay never makes the dial late. Shorter waits are covered by the fence as
            # it stands; right before the request it is read again if too little is left.
            time.sleep(max(slot_at - PACING_CHECK_LEAD_S - time.monotonic(), 0.0))
            state = fence.check()
            if state is not RunState.RUNNING:
                return _stop_claim(call_id, token, state, transaction)
        remaining = slot_at - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        # A thread that woke well after its slot (a busy machine) would send right before the
        # next slot's call and crowd the provider's second: it lets the slot go and takes the
        # next free one instead.
        if time.monotonic() - slot_at <= PACING_LATE_S:
            return _caller_index(reservation, len(callers))
    with transaction() as session:
        hand_back(session, call_id, token, 0)
    return "paced_late"


def _caller_index(reservation: Reservation, callers: int) -> int:
    """Which caller number of the pool to dial from: the one whose pacing slot was taken, or,
    when numbers are not paced, any of them (so the calls spread over the pool)."""
    if get_settings().per_number_pacing or callers < 2:
        return reservation.choice
    return random.randrange(callers)


def _over_frequency_cap(row: Any) -> tuple[str, _Undo] | None:
    """Over the per-number cap of dials in 7 days the call waits until the oldest one ages
    out; None when it may be dialed now."""
    cap = get_settings().max_dials_per_number_per_week
    dials = row.week_of_dials
    if len(dials) < cap:
        return None
    frees_at = dials[len(dials) - cap] + timedelta(days=7)
    delay = max((frees_at - datetime.now(UTC)).total_seconds(), 1.0)
    return "over_frequency_cap", lambda session, token: hand_back(session, row.id, token, delay)


def _record_dial_error(
    session: Session, call_id: str, batch_id: str, token: str, error: ProviderError
) -> str:
    if error.auth_failed:
        log.error(
            "provider rejected our credentials; failing batch %s: %s", batch_id, error.message
        )
        fail_claimed_call(session, call_id, Outcome.PROVIDER_AUTH_FAILED, error)
        fail_batch(session, batch_id, f"provider rejected the credentials: {error.message}")
        return "auth_failed"
    if error.fenced:
        # Not sent: the batch is read again by the next claim (a cancelled batch ends it now).
        hand_back(session, call_id, token, 0)
        return "fenced"
    if error.ambiguous:
        # The call may exist: leave it claimed; the tick reconciles it with the provider before
        # anything dials this recipient again.
        log.warning("ambiguous dial of %s: %s", call_id, error.message)
        return "ambiguous"
    if error.retryable:
        return _provider_did_not_process(session, call_id, batch_id, token)
    fail_claimed_call(session, call_id, Outcome.PROVIDER_ERROR, error)
    return "rejected"


def _provider_did_not_process(session: Session, call_id: str, batch_id: str, token: str) -> str:
    """A dial the provider did not process (it is unreachable, or answered 5xx or 429): the
    call goes back to pending, due again after the batch's backoff, or, once the batch's run
    of such dials has lasted ``provider_unreachable_pause_after_s``, due at once in a batch
    paused for ``provider_unreachable`` (its ``batch.paused`` webhook in this transaction)."""
    settings = get_settings()
    unreachable_for = batches_repo.note_unreachable(session, batch_id) or 0.0
    verdict = provider_outage.unreachable_verdict(
        unreachable_for,
        base_s=settings.provider_unreachable_retry_base_s,
        cap_s=settings.provider_unreachable_retry_max_s,
        pause_after_s=settings.provider_unreachable_pause_after_s,
    )
    if verdict.pause:
        if store.pause_running(session, batch_id, provider_outage.PAUSED_PROVIDER_UNREACHABLE):
            log.error(
                "no dial of batch %s was processed by the provider for %.0f s; paused",
                batch_id,
                unreachable_for,
            )
            webhooks.batch_paused(session, batch_id)
        hand_back(session, call_id, token, 0)
        return "provider_unreachable"
    hand_back(session, call_id, token, verdict.retry_in_s)
    return "deferred"


def reconcile_call(call_id: str, transaction: Transaction) -> str:
    """Ask the provider about a call whose answer or final callback never came.

    A claim is looked for among the provider's calls to the number since the claim, never
    taking an earlier attempt's call for this one; a claim the provider has no call for is
    handed back and dialed again. A call found still live keeps its slot (its lease renewed).
    """
    with transaction() as session:
        row = calls_repo.reconcile_row(session, call_id)
    if row is None or row.status not in LIVE:
        return "nothing_to_do"
    provider = provider_for(row.credentials_ref or "default")
    try:
        if row.status == CallStatus.DIALING and row.phone_number is None:
            found = None  # no number (a WhatsApp recipient): never dialed through the provider
        elif row.status == CallStatus.DIALING:
            callers = [number for number in row.caller_numbers if number]
            found = provider.find_call(
                row.phone_number, callers, row.claimed_at, exclude=set(row.earlier_sids)
            )
        else:
            found = provider.fetch_call(row.provider_call_sid) if row.provider_call_sid else None
    except ProviderError as error:
        log.warning("reconciling %s failed, will retry next tick: %s", call_id, error.message)
        return "provider_unavailable"
    with transaction() as session:
        if (
            found is not None
            and row.status == CallStatus.DIALING
            and calls_repo.sid_taken(session, found.sid, call_id)
        ):
            found = None  # a call to the same number made for another recipient
        if found is not None:
            apply_provider_update(session, call_id, found)
            if found.status not in LIVE:
                return "updated"
            names = slots.slot_names(row.batch_id, row.workspace_id)
            after_commit(session, lambda: slots.renew([(call_id, names)]))
            if batches_repo.batch_status(session, row.batch_id) == BatchStatus.CANCELLED:
                # Found live in a batch cancelled meanwhile: end it like the cancel's hang-ups.
                after_commit(session, lambda: messaging.publish(messaging.TASK_HANG_UP, [call_id]))
                return "hang_up"
            return "live"
        if row.status == CallStatus.DIALING and hand_back(session, call_id, row.claim_token, 0):
            # The provider has no such call: the dial never happened, so dial again now. Its
            # claim's slot is given back first (the redial takes one of its own).
            names = slots.slot_names(row.batch_id, row.workspace_id)
            after_commit(session, lambda: slots.release(call_id, names))
            after_commit(session, lambda: messaging.publish(messaging.TASK_DIAL, [call_id]))
            return "redial"
    return "unchanged"


def agent_config(session: Session, call_id: str) -> AgentConfigResponse:
    """The rendered prompt, first message and settings the voice-agent runtime runs a call with."""
    row = calls_repo.agent_config_row(session, call_id)
    if row is None or row.rendered_prompt is None:
        raise NotFound(["path", "call_id"], f"call '{call_id}' not found")
    data = row.client_data or {}
    return AgentConfigResponse(
        call_id=row.id,
        batch_id=row.batch_id,
        agent_id=row.agent_id,
        prompt=row.rendered_prompt,
        first_message=row.rendered_first_message or "",
        language=row.language,
        llm=row.llm,
        voice=row.voice or {},
        dynamic_variables=data.get("dynamic_variables") or {},
        conversation_config_override=row.rendered_override,
    )


def twiml_for_call(call_id: str) -> str:
    """The TwiML a call starts with: stream the audio to the voice-agent runtime."""
    settings = get_settings()
    config_url = agent_config_url(call_id, settings)
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response><Connect>'
        f"<Stream url={quoteattr(settings.voice_runtime_url)}>"
        f'<Parameter name="call_id" value={quoteattr(call_id)}/>'
        f'<Parameter name="agent_config_url" value={quoteattr(config_url)}/>'
        "</Stream></Connect></Response>"
    )


def answer_machine(call_id: str, transaction: Transaction) -> str:
    """Do to the live call a machine answered what its voicemail behaviour says: end it, or
    play the voicemail message rendered with the recipient's variables and then end it; what
    was done. Recorded on the call only once the provider took it, so that the call's final
    report, which comes after, ends it with the outcome that says a message was left."""
    with transaction() as session:
        row = calls_repo.machine_action_row(session, call_id)
    if row is None or not row.provider_call_sid:
        return "nothing_to_do"
    live = row.status in LIVE and row.voicemail_action is None
    action = plan_machine_action(row.voicemail_behavior, row.answered_by, live)
    if action is MachineAction.NOTHING:
        return "nothing_to_do"
    provider = provider_for(row.credentials_ref or "default")
    try:
        if action is MachineAction.HANG_UP:
            provider.hang_up_on_machine(row.provider_call_sid)
        else:
            variables = (row.client_data or {}).get("dynamic_variables") or {}
            message = render(row.voicemail_message_template, variables)
            provider.leave_message(row.provider_call_sid, message)
    except ProviderError as error:
        # Most often the call ended first (the machine hung up); the agent stays on otherwise.
        log.info("%s on the machine of %s not done: %s", action, call_id, error.message)
        return "not_done"
    with transaction() as session:
        calls_repo.record_voicemail_action(
            session, call_id, row.provider_call_sid, ACTION_TAKEN[action]
        )
    return str(action)


def ringing_timeout_s(telephony_call_config: dict[str, Any] | None) -> int:
    """How long a call of a batch with this ``telephony_call_config`` rings: its own, or the
    default."""
    config = telephony_call_config or {}
    return int(config.get("ringing_timeout_secs") or get_settings().default_ringing_timeout_s)


def hang_up_call(call_id: str, transaction: Transaction) -> str:
    """End a live call of a cancelled batch through the provider; its callback finalises it.

    When the provider says there is nothing to end, the call is already over there (its final
    callback may be late or lost): its status is fetched and applied at once.
    """
    with transaction() as session:
        row = calls_repo.hangup_row(session, call_id)
    if row is None or row.status not in LIVE or not row.provider_call_sid:
        return "nothing_to_do"
    provider = provider_for(row.credentials_ref or "default")
    try:
        ended = provider.end_call(
            row.provider_call_sid, answered=row.status == CallStatus.IN_PROGRESS
        )
    except ProviderError as error:
        log.info("hang-up of %s not done (%s); fetching its status", call_id, error.message)
    else:
        # The provider's answer carries the call's end: applied now, not left to its callback.
        if ended is not None:
            with transaction() as session:
                apply_provider_update(session, call_id, ended)
        return "ended"
    try:
        update = provider.fetch_call(row.provider_call_sid)
    except ProviderError as error:
        log.warning(
            "status of %s unavailable; the tick will reconcile it: %s", call_id, error.message
        )
        return "unknown"
    if update is not None:
        with transaction() as session:
            apply_provider_update(session, call_id, update)
    return "reconciled"
