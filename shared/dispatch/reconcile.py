"""Reconciling a call with its provider when its answer or final callback never came."""

from __future__ import annotations

import logging

from shared import messaging
from shared.batches import repository as batches_repo
from shared.db import Transaction, after_commit
from shared.dispatch import repository as calls_repo
from shared.dispatch.results import ReconcileResult
from shared.errors import ProviderError
from shared.lifecycle.states import LIVE, BatchStatus, CallStatus
from shared.lifecycle.transitions import apply_provider_update, hand_back
from shared.limits import slots
from shared.telephony import registry

log = logging.getLogger(__name__)


def reconcile_call(call_id: str, transaction: Transaction) -> ReconcileResult:
    """Ask the provider about a call whose answer or final callback never came.

    A claim is looked for among the provider's calls to the number since the claim, never
    taking an earlier attempt's call for this one; a claim the provider has no call for is
    handed back and dialed again. A call found still live keeps its slot (its lease renewed).
    """
    with transaction() as session:
        row = calls_repo.reconcile_row(session, call_id)
    if row is None or row.status not in LIVE:
        return ReconcileResult.NOTHING_TO_DO
    provider = registry.provider_for(row.provider, row.credentials_ref)
    account = registry.account_key(row.provider, row.credentials_ref)
    try:
        if row.status != CallStatus.DIALING:
            found = provider.fetch_call(row.provider_call_sid) if row.provider_call_sid else None
        elif row.phone_number is None or row.claimed_at is None:
            found = None  # no number (a WhatsApp recipient): never dialed through the provider
        else:
            callers = [number for number in row.caller_numbers if number]
            found = provider.find_call(
                row.phone_number, callers, row.claimed_at, exclude=set(row.earlier_sids)
            )
    except ProviderError as error:
        log.warning("reconciling %s failed, will retry next tick: %s", call_id, error.message)
        return ReconcileResult.PROVIDER_UNAVAILABLE
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
                return ReconcileResult.UPDATED
            names = slots.slot_names(row.batch_id, row.workspace_id, account)
            after_commit(session, lambda: slots.renew([(call_id, names)]))
            if batches_repo.batch_status(session, row.batch_id) == BatchStatus.CANCELLED:
                # Found live in a batch cancelled meanwhile: end it like the cancel's hang-ups.
                after_commit(session, lambda: messaging.publish(messaging.TASK_HANG_UP, [call_id]))
                return ReconcileResult.HANG_UP
            return ReconcileResult.LIVE
        if (
            row.status == CallStatus.DIALING
            and row.claim_token is not None
            and hand_back(session, call_id, row.claim_token, 0)
        ):
            # The provider has no such call: the dial never happened, so dial again now. Its
            # claim's slot is given back first (the redial takes one of its own).
            names = slots.slot_names(row.batch_id, row.workspace_id, account)
            after_commit(session, lambda: slots.release(call_id, names))
            after_commit(session, lambda: messaging.publish(messaging.TASK_DIAL, [call_id]))
            return ReconcileResult.REDIAL
    return ReconcileResult.UNCHANGED
