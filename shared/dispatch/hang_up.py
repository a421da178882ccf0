"""Ending a live call through its provider."""

from __future__ import annotations

import logging

from shared.db import Transaction
from shared.dispatch import repository as calls_repo
from shared.dispatch.results import HangUpResult
from shared.errors import ProviderError
from shared.lifecycle.states import LIVE, CallStatus
from shared.lifecycle.transitions import apply_provider_update
from shared.telephony import registry

log = logging.getLogger(__name__)


def hang_up_call(call_id: str, transaction: Transaction) -> HangUpResult:
    """End a live call of a cancelled batch through the provider; its callback finalises it.

    When the provider says there is nothing to end, the call is already over there (its final
    callback may be late or lost): its status is fetched and applied at once.
    """
    with transaction() as session:
        row = calls_repo.hangup_row(session, call_id)
    if row is None or row.status not in LIVE or not row.provider_call_sid:
        return HangUpResult.NOTHING_TO_DO
    provider = registry.provider_for(row.provider, row.credentials_ref)
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
        return HangUpResult.ENDED
    try:
        update = provider.fetch_call(row.provider_call_sid)
    except ProviderError as error:
        log.warning(
            "status of %s unavailable; the tick will reconcile it: %s", call_id, error.message
        )
        return HangUpResult.UNKNOWN
    if update is not None:
        with transaction() as session:
            apply_provider_update(session, call_id, update)
    return HangUpResult.RECONCILED
