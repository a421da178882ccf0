"""Acting on an answering machine's verdict: hang up, or leave the batch's message."""

from __future__ import annotations

import logging

from shared.db import Transaction
from shared.dispatch import repository as calls_repo
from shared.dispatch.results import MachineResult
from shared.errors import ProviderError
from shared.lifecycle.states import LIVE
from shared.telephony import registry
from shared.templates import render
from shared.voicemail import ACTION_TAKEN, MachineAction, plan_machine_action

log = logging.getLogger(__name__)


def answer_machine(call_id: str, transaction: Transaction) -> MachineResult:
    """Do to the live call a machine answered what its voicemail behaviour says: end it, or
    play the voicemail message rendered with the recipient's variables and then end it; what
    was done. Recorded on the call only once the provider took it, so that the call's final
    report, which comes after, ends it with the outcome that says a message was left."""
    with transaction() as session:
        row = calls_repo.machine_action_row(session, call_id)
    if row is None or not row.provider_call_sid:
        return MachineResult.NOTHING_TO_DO
    live = row.status in LIVE and row.voicemail_action is None
    action = plan_machine_action(row.voicemail_behavior, row.answered_by, live)
    if action is MachineAction.NOTHING:
        return MachineResult.NOTHING_TO_DO
    provider = registry.provider_for(row.provider, row.credentials_ref)
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
        return MachineResult.NOT_DONE
    with transaction() as session:
        calls_repo.record_voicemail_action(
            session, call_id, row.provider_call_sid, ACTION_TAKEN[action]
        )
    return MachineResult(action)
