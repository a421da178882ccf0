"""Dialing: claim, render and place calls, and record the provider's answers."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from shared import messaging, metrics
from shared.batches import repository as batches_repo
from shared.db import Transaction, after_commit
from shared.dispatch import repository as calls_repo
from shared.dispatch.dial_errors import record_dial_error
from shared.dispatch.fence import Fence, stopped_before_dial
from shared.dispatch.gates import outside_window, undo_claim_unless_due
from shared.dispatch.pacing import pacing_limits, wait_for_pacing
from shared.dispatch.repository import RenderInputs
from shared.dispatch.results import DialResult
from shared.errors import ProviderError
from shared.lifecycle import store
from shared.lifecycle.plans import ProviderUpdate
from shared.lifecycle.store import ClaimedCall
from shared.lifecycle.transitions import apply_provider_reports
from shared.limits import slots
from shared.limits.ratelimit import Reservation
from shared.limits.upkeep import restore_slots
from shared.settings import get_settings
from shared.telephony import registry
from shared.telephony.port import DialRequest
from shared.templates import render, render_tree
from shared.voicemail import detection_for

log = logging.getLogger(__name__)


# A call that found every concurrency slot taken is due again after:
SLOT_RETRY_DELAY_S = 1.0

# The provider's answers to the dials of one message are recorded together, at the latest
# this long after the first of them came (a call's status callbacks may come first; they
# are applied all the same):
ANSWERS_RECORDED_WITHIN_S = 1.0


def dial_call(call_id: str, transaction: Transaction) -> DialResult:
    """Claim, render and place one call; returns what happened, for logs, tests and metrics."""
    return dial_calls([call_id], transaction)[0]


def dial_calls(call_ids: list[str], transaction: Transaction) -> list[DialResult]:
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
    results: list[DialResult] = []
    answers: list[tuple[str, ProviderUpdate]] = []
    unclaimed: list[tuple[str, float]] = []
    oldest = 0.0
    with transaction() as session:
        inputs = calls_repo.render_inputs(session, call_ids)
    try:
        for call_id in call_ids:
            if call_id not in inputs:
                results.append(DialResult.NOT_CLAIMED)
                continue
            placement = _place_call(call_id, inputs[call_id], transaction)
            results.append(placement.result)
            if placement.due_again_at is not None:
                unclaimed.append((call_id, placement.due_again_at))
            if placement.answer is None:
                continue
            if not answers:
                oldest = time.monotonic()
            answers.append((call_id, placement.answer))
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
    unclaimed: list[tuple[str, float]],
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
                session, [(call_id, max(due_at - now, 0.0)) for call_id, due_at in unclaimed]
            )


def _hang_up_all(call_ids: Sequence[str]) -> None:
    messaging.publish_many(messaging.TASK_HANG_UP, [[call_id] for call_id in call_ids])


def _rendered(inputs: RenderInputs) -> tuple[str, str, dict[str, Any] | None]:
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


@dataclass(frozen=True, slots=True)
class Placement:
    """What became of one call: ``result``, with the provider's answer when it was placed,
    or, when it was left pending without a claim, the moment it is due again
    (``time.monotonic()``)."""

    result: DialResult
    answer: ProviderUpdate | None = None
    due_again_at: float | None = None


def _place_call(call_id: str, inputs: RenderInputs, transaction: Transaction) -> Placement:
    """Take the call's slots, claim it, pass its gates, pace it and place it."""
    # The live-call slot comes first, from Redis: a call without one is not claimed (no
    # transaction spent on a call that cannot be placed). A standing claim (a dialing call)
    # always holds one; a claim not made, or undone since, gives back a slot taken here. A slot
    # the call already held is another delivery's, whose claim it is: it stays. A call of a
    # running batch that has a number and is inside its calling window (as the message read
    # them) takes its pacing slot in the same step, or nothing when that is too far away. The
    # others take the live-call slot alone and are claimed to be ended or handed back (or
    # paced after the claim, should what was read have changed meanwhile).
    callers = [number for number in inputs.caller_numbers if number]
    to_pace = inputs.running and inputs.phone_number is not None and outside_window(inputs) is None
    account = registry.account_key(inputs.provider, inputs.credentials_ref)
    acquired, first = _take_slots(
        call_id, inputs, account, callers if to_pace else None, transaction
    )
    if acquired is slots.Acquired.NONE:
        if first is None:
            return Placement(DialResult.NO_SLOT, due_again_at=time.monotonic() + SLOT_RETRY_DELAY_S)
        metrics.PACING_HANDED_BACK.inc()
        return Placement(DialResult.PACED, due_again_at=first.made_at + first.wait_s)
    names = slots.slot_names(inputs.batch_id, inputs.workspace_id, account)
    token = uuid.uuid4().hex
    row = None
    undone: DialResult | None = None
    # The claim takes the call only while its batch runs: the dial's fence starts before it.
    fence = Fence(inputs.batch_id, time.monotonic())
    try:
        row = store.claim_for_dial(call_id, token, *_rendered(inputs))
        if row is not None:
            undone = undo_claim_unless_due(row, token, transaction, window_checked=to_pace)
    finally:  # a claim that failed to undo still stands, and keeps its slot
        if (row is None or undone is not None) and acquired is slots.Acquired.TAKEN:
            slots.release(call_id, names)
    if row is None:
        return Placement(DialResult.NOT_CLAIMED)
    if undone is not None:
        return Placement(undone)
    return _place_claimed_call(call_id, row, token, names, callers, first, fence, transaction)


def _take_slots(
    call_id: str,
    row: RenderInputs,
    account: str | None,
    callers: list[str] | None,
    transaction: Transaction,
) -> tuple[slots.Acquired, Reservation | None]:
    """A live-call slot under the workspace cap, the batch's target_concurrency_limit and the
    cap of the provider ``account`` (``slots.slot_limits``); with ``callers``, and in the same
    step, a pacing slot for one of them (``pacing_limits``).
    When Redis has lost the slots (it restarted empty), they are rebuilt from PostgreSQL
    first; while another process rebuilds them, nothing is taken."""
    settings = get_settings()
    limits = slots.slot_limits(
        row.batch_id, row.workspace_id, account, row.target_concurrency_limit
    )
    try:
        for _ in range(2):
            if callers is None:
                acquired, reservation = slots.acquire(call_id, limits), None
            else:
                try:
                    pacing, pool = pacing_limits(row.provider, row.credentials_ref, callers)
                except ProviderError:  # its account cannot be used: the dial says what then
                    acquired, reservation = slots.acquire(call_id, limits), None
                else:
                    acquired, reservation = slots.acquire_and_reserve(
                        call_id, limits, pacing, settings.max_pacing_sleep_s, pool
                    )
            if acquired is not slots.Acquired.UNKNOWN:
                return acquired, reservation
            restore_slots(transaction)
    except RedisError as exc:
        log.warning("concurrency slots unavailable for %s: %s", call_id, exc)
    return slots.Acquired.NONE, None


def _place_claimed_call(
    call_id: str,
    row: ClaimedCall,
    token: str,
    names: list[str],
    callers: list[str],
    first: Reservation | None,
    fence: Fence,
    transaction: Transaction,
) -> Placement:
    """Pace (from the reservation taken with the slot, if any) and place a claimed call holding
    its slot: what happened, with the provider's answer when it was placed. The request goes
    out only within the dial's fence (``Fence``): a batch cancelled or paused meanwhile stops
    it."""
    settings = get_settings()
    try:
        provider = registry.provider_for(row.provider, row.credentials_ref)
    except ProviderError as error:  # its account cannot be used now (shared.connections)
        slots.release(call_id, names)
        with transaction() as session:
            return Placement(record_dial_error(session, call_id, row.batch_id, token, error))
    paced = wait_for_pacing(call_id, row, token, callers, first, fence, transaction)
    if paced.stopped is not None:
        slots.release(call_id, names)
        return Placement(paced.stopped)
    stopped = stopped_before_dial(call_id, token, fence, transaction)
    if stopped is not None:
        slots.release(call_id, names)
        return Placement(stopped)
    assert row.phone_number is not None  # the gates let no call without a number through
    request = DialRequest(
        call_id=call_id,
        to=row.phone_number,
        from_=callers[paced.caller],
        ringing_timeout_s=ringing_timeout_s(row.telephony_call_config),
        time_limit_s=settings.max_call_duration_s,
        send_before=fence.send_before,
        machine_detection=detection_for(row.voicemail_behavior, provider.connect_agent_detection),
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
            return Placement(record_dial_error(session, call_id, row.batch_id, token, error))
    metrics.DIAL_SECONDS.labels(result=metrics.DIAL_ACCEPTED).observe(time.perf_counter() - started)
    if row.provider_unreachable:
        # The first dials accepted after an outage end the batch's run of unprocessed ones
        # (rare: the claim said a run was under way, so no dial pays this otherwise).
        with transaction() as session:
            batches_repo.clear_unreachable(session, row.batch_id)
    return Placement(DialResult.DISPATCHED, placed.update)


def ringing_timeout_s(telephony_call_config: dict[str, Any] | None) -> int:
    """How long a call of a batch with this ``telephony_call_config`` rings: its own, or the
    default."""
    config = telephony_call_config or {}
    return int(config.get("ringing_timeout_secs") or get_settings().default_ringing_timeout_s)
