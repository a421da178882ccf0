"""A dial the provider refused or did not process: what becomes of the call, and of its batch when
its provider is unreachable."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from shared import provider_outage
from shared.batches import repository as batches_repo
from shared.dispatch.results import DialResult
from shared.errors import ProviderError
from shared.lifecycle import store
from shared.lifecycle.states import Outcome
from shared.lifecycle.transitions import fail_batch, fail_claimed_call, hand_back
from shared.settings import get_settings
from shared.webhooks import events as webhooks

log = logging.getLogger(__name__)


def record_dial_error(
    session: Session, call_id: str, batch_id: str, token: str, error: ProviderError
) -> DialResult:
    if error.auth_failed:
        log.error(
            "provider rejected our credentials; failing batch %s: %s", batch_id, error.message
        )
        fail_claimed_call(session, call_id, Outcome.PROVIDER_AUTH_FAILED, error)
        fail_batch(session, batch_id, f"provider rejected the credentials: {error.message}")
        return DialResult.AUTH_FAILED
    if error.fenced:
        # Not sent: the batch is read again by the next claim (a cancelled batch ends it now).
        hand_back(session, call_id, token, 0)
        return DialResult.FENCED
    if error.ambiguous:
        # The call may exist: leave it claimed; the tick reconciles it with the provider before
        # anything dials this recipient again.
        log.warning("ambiguous dial of %s: %s", call_id, error.message)
        return DialResult.AMBIGUOUS
    if error.retryable:
        return _provider_did_not_process(session, call_id, batch_id, token)
    fail_claimed_call(session, call_id, Outcome.PROVIDER_ERROR, error)
    return DialResult.REJECTED


def _provider_did_not_process(
    session: Session, call_id: str, batch_id: str, token: str
) -> DialResult:
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
        return DialResult.PROVIDER_UNREACHABLE
    hand_back(session, call_id, token, verdict.retry_in_s)
    return DialResult.DEFERRED
