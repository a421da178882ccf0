"""The statuses of calls and batches and the outcomes of calls: the one list of each, with
the sets every rule and query needs derived from them (and their SQL forms)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum


class CallStatus(StrEnum):
    """Where a call (one recipient of a batch) stands."""

    PENDING = "pending"
    DIALING = "dialing"  # claimed by a worker; the provider request is in flight
    DISPATCHED = "dispatched"
    INITIATED = "initiated"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    VOICEMAIL = "voicemail"  # a completed call that a machine answered
    CANCELLED = "cancelled"


class BatchStatus(StrEnum):
    """Where a batch stands (the seed's status values)."""

    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Outcome(StrEnum):
    """The finer reason a recipient ended as it did."""

    ANSWERED = "answered"
    VOICEMAIL = "voicemail"  # a machine answered; no message was left
    VOICEMAIL_MESSAGE_LEFT = "voicemail_message_left"  # the voicemail message was played
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CALL_FAILED = "call_failed"
    CANCELED = "canceled"  # the provider's word: the call was cancelled there
    PROVIDER_ERROR = "provider_error"
    PROVIDER_AUTH_FAILED = "provider_auth_failed"
    WHATSAPP_UNSUPPORTED = "whatsapp_unsupported"
    BATCH_FAILED = "batch_failed"
    BATCH_CANCELLED = "batch_cancelled"
    DNC = "dnc"  # on the workspace's do-not-call list: never dialed
    DUPLICATE = "duplicate"  # the number appears earlier in the same batch: dialed once
    UNKNOWN_TIME_ZONE = "unknown_time_zone"  # no zone to apply the calling window in
    OUTSIDE_CALLING_WINDOW = "outside_calling_window"  # the window never opens


# How far along a call is: a report is applied only forwards.
RANK = {
    CallStatus.PENDING: 0,
    CallStatus.DIALING: 1,
    CallStatus.DISPATCHED: 2,
    CallStatus.INITIATED: 3,
    CallStatus.IN_PROGRESS: 4,
    CallStatus.COMPLETED: 5,
    CallStatus.FAILED: 5,
    CallStatus.VOICEMAIL: 5,
    CallStatus.CANCELLED: 5,
}
FINAL = frozenset(status for status, rank in RANK.items() if rank == RANK[CallStatus.COMPLETED])
# Counted in total_calls_finished: the seed's "completed + failed"; a voicemail is a completed
# call that a machine answered.
FINISHED = FINAL - {CallStatus.CANCELLED}
# Calls the provider has (it may still report on them).
AT_PROVIDER = frozenset(
    status
    for status, rank in RANK.items()
    if RANK[CallStatus.DIALING] < rank < RANK[CallStatus.COMPLETED]
)
# Claimed or at the provider: the provider may still tell us something, and the call holds a
# live-call slot.
LIVE = AT_PROVIDER | {CallStatus.DIALING}
# `dialing` is internal; clients see such a recipient as still pending.
PUBLIC_STATUS = {CallStatus.DIALING: CallStatus.PENDING}

# Batches that have not ended: they can be cancelled, paused or fail.
BATCH_OPEN = frozenset({BatchStatus.PENDING, BatchStatus.IN_PROGRESS})
BATCH_ENDED = frozenset(BatchStatus) - BATCH_OPEN

# The outcome names a retry policy uses, and the call outcomes each one covers: "voicemail"
# is any call a machine answered, whether a message was left on it or not.
RETRYABLE_OUTCOMES = {
    "busy": (Outcome.BUSY,),
    "no_answer": (Outcome.NO_ANSWER,),
    "failed": (Outcome.CALL_FAILED,),
    "voicemail": (Outcome.VOICEMAIL, Outcome.VOICEMAIL_MESSAGE_LEFT),
}
# Final outcomes a manual retry of a batch dials again.
MANUALLY_RETRYABLE_OUTCOMES = frozenset({Outcome.BUSY, Outcome.NO_ANSWER, Outcome.CALL_FAILED})


def public_status(status: str) -> str:
    """The recipient status a client sees."""
    return str(PUBLIC_STATUS.get(CallStatus(status), status))


def sql_list(statuses: Iterable[StrEnum]) -> str:
    """The statuses as an SQL list literal, ``('a', 'b')``, in a fixed order (statements built
    from it are prepared once)."""
    return "(" + ", ".join(f"'{status.value}'" for status in sorted(statuses)) + ")"


# The SQL forms of the sets above, for the queries that need them.
SQL_LIVE = sql_list(LIVE)
SQL_AT_PROVIDER = sql_list(AT_PROVIDER)
SQL_FINAL = sql_list(FINAL)
SQL_FINISHED = sql_list(FINISHED)
SQL_BATCH_OPEN = sql_list(BATCH_OPEN)
# A batch whose calls may be placed now: in progress and not paused (``b`` the batch).
SQL_BATCH_RUNNING = f"b.status = '{BatchStatus.IN_PROGRESS.value}' AND b.paused_at IS NULL"
