"""The gates a claimed call passes before it is dialed: a number to dial, the do-not-call list, the
calling window, the weekly frequency cap."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

from sqlalchemy.orm import Session

from shared.db import Transaction
from shared.dispatch.repository import RenderInputs
from shared.dispatch.results import DialResult
from shared.lifecycle.states import Outcome
from shared.lifecycle.store import ClaimedCall
from shared.lifecycle.transitions import fail_claimed_call, hand_back, skip_claimed_call
from shared.settings import get_settings
from shared.windows import CallingWindow, recipient_zones

# Undoes a claim that is not to be dialed now, given the session and the claim's token.
Undo = Callable[[Session, str], object]


class Closed(NamedTuple):
    """A gate the call may not pass now: why, and how its claim is undone."""

    result: DialResult
    undo: Undo


def undo_claim_unless_due(
    row: ClaimedCall, token: str, transaction: Transaction, window_checked: bool
) -> DialResult | None:
    """None when the claimed call is to be dialed now (nothing more is written); else why not,
    its claim undone in a transaction of its own (a batch cancelled meanwhile ends it)."""
    verdict = not_to_dial_now(row, window_checked)
    if verdict is None:
        return None
    reason, undo = verdict
    with transaction() as session:
        undo(session, token)
    return reason


def not_to_dial_now(row: ClaimedCall, window_checked: bool) -> Closed | None:
    """Checked on the claimed row: why the call is not dialed now, and how its claim is undone
    (the calling window, unless it was checked right before the claim)."""
    if row.phone_number is None:
        return Closed(
            DialResult.WHATSAPP_UNSUPPORTED,
            lambda session, _: fail_claimed_call(session, row.id, Outcome.WHATSAPP_UNSUPPORTED),
        )
    if row.do_not_call:
        return Closed(
            DialResult.DNC, lambda session, _: skip_claimed_call(session, row.id, Outcome.DNC)
        )
    return (None if window_checked else outside_window(row)) or over_frequency_cap(row)


def outside_window(row: RenderInputs | ClaimedCall) -> Closed | None:
    """Checked when the call is about to be dialed: outside its calling window the call goes
    back to pending, due at the window's next opening; None when it may be dialed now."""
    settings = get_settings()
    window = (
        CallingWindow.from_json(row.calling_window)
        if row.calling_window
        else CallingWindow.from_spec(settings.default_calling_window)
    )
    # Only calls with a number get here (the dial checks it first).
    assert row.phone_number is not None
    zones = recipient_zones(row.phone_number, window, row.timezone)
    if not zones:
        return Closed(
            DialResult.UNKNOWN_TIME_ZONE,
            lambda session, _: skip_claimed_call(session, row.id, Outcome.UNKNOWN_TIME_ZONE),
        )
    now = datetime.now(UTC)
    opening = window.next_opening(now, zones)
    if opening == now:
        return None
    if opening is None:
        return Closed(
            DialResult.WINDOW_NEVER_OPENS,
            lambda session, _: skip_claimed_call(session, row.id, Outcome.OUTSIDE_CALLING_WINDOW),
        )
    delay = (opening - now).total_seconds()
    return Closed(
        DialResult.OUTSIDE_WINDOW,
        lambda session, token: hand_back(session, row.id, token, delay),
    )


def over_frequency_cap(row: ClaimedCall) -> Closed | None:
    """Over the per-number cap of dials in 7 days the call waits until the oldest one ages
    out; None when it may be dialed now."""
    cap = get_settings().max_dials_per_number_per_week
    dials = row.week_of_dials
    if len(dials) < cap:
        return None
    frees_at = dials[len(dials) - cap] + timedelta(days=7)
    delay = max((frees_at - datetime.now(UTC)).total_seconds(), 1.0)
    return Closed(
        DialResult.OVER_FREQUENCY_CAP,
        lambda session, token: hand_back(session, row.id, token, delay),
    )
