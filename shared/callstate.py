"""The call state machine: statuses, how provider statuses map onto them, and which batch
counters each transition moves. Pure functions; the repositories apply what they decide."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from shared.voicemail import MESSAGE_LEFT, is_machine

PENDING = "pending"
DIALING = "dialing"  # claimed by a worker; the provider request is in flight
DISPATCHED = "dispatched"
INITIATED = "initiated"
IN_PROGRESS = "in_progress"
COMPLETED = "completed"
FAILED = "failed"
VOICEMAIL = "voicemail"
CANCELLED = "cancelled"

RANK = {
    PENDING: 0,
    DIALING: 1,
    DISPATCHED: 2,
    INITIATED: 3,
    IN_PROGRESS: 4,
    COMPLETED: 5,
    FAILED: 5,
    VOICEMAIL: 5,
    CANCELLED: 5,
}
FINAL = frozenset({COMPLETED, FAILED, VOICEMAIL, CANCELLED})
# Counted in total_calls_finished: the seed's "completed + failed"; a voicemail is a completed
# call that a machine answered.
FINISHED = frozenset({COMPLETED, FAILED, VOICEMAIL})
# States in which the provider may still tell us something about the call.
LIVE = frozenset({DIALING, DISPATCHED, INITIATED, IN_PROGRESS})
# `dialing` is internal; clients see such a recipient as still pending.
PUBLIC_STATUS = {DIALING: PENDING}

# Outcomes: the finer reason a recipient ended as it did.
OUTCOME_ANSWERED = "answered"
OUTCOME_VOICEMAIL = "voicemail"  # a machine answered; no message was left
OUTCOME_VOICEMAIL_MESSAGE_LEFT = "voicemail_message_left"  # the voicemail message was played
OUTCOME_BUSY = "busy"
OUTCOME_NO_ANSWER = "no_answer"
OUTCOME_CALL_FAILED = "call_failed"
OUTCOME_CANCELED = "canceled"
OUTCOME_PROVIDER_ERROR = "provider_error"
OUTCOME_PROVIDER_AUTH_FAILED = "provider_auth_failed"
OUTCOME_WHATSAPP_UNSUPPORTED = "whatsapp_unsupported"
OUTCOME_BATCH_FAILED = "batch_failed"
OUTCOME_BATCH_CANCELLED = "batch_cancelled"
OUTCOME_DNC = "dnc"  # on the workspace's do-not-call list: never dialed
OUTCOME_DUPLICATE = "duplicate"  # the number appears earlier in the same batch: dialed once
OUTCOME_UNKNOWN_TIME_ZONE = "unknown_time_zone"  # no zone to apply the calling window in
OUTCOME_OUTSIDE_CALLING_WINDOW = "outside_calling_window"  # the window never opens

# Twilio CallStatus → (our status, outcome when final).
_TWILIO = {
    "queued": (DISPATCHED, None),
    "initiated": (INITIATED, None),
    "ringing": (INITIATED, None),
    "in-progress": (IN_PROGRESS, None),
    "completed": (COMPLETED, OUTCOME_ANSWERED),
    "busy": (FAILED, OUTCOME_BUSY),
    "no-answer": (FAILED, OUTCOME_NO_ANSWER),
    "failed": (FAILED, OUTCOME_CALL_FAILED),
    "canceled": (CANCELLED, OUTCOME_CANCELED),
}


# Reports that never tell more than another report of the same call: a call that rings was
# initiated, and both map to `initiated`. The API acknowledges them without queueing work.
REDUNDANT_TWILIO_STATUSES = frozenset({"ringing"})


def public_status(status: str) -> str:
    """The recipient status a client sees."""
    return PUBLIC_STATUS.get(status, status)


@dataclass(frozen=True)
class ProviderUpdate:
    """What the provider says about a call, in our terms."""

    sid: str
    status: str
    provider_status: str
    outcome: str | None = None
    duration_s: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    # The caller number the call was placed from, when the report tells it.
    from_number: str | None = None
    # The answering machine detection's verdict, when the report carries it.
    answered_by: str | None = None


def from_twilio(
    sid: str,
    call_status: str,
    *,
    answered_by: str | None = None,
    duration: str | int | None = None,
    error_code: str | None = None,
    error_message: str | None = None,
    from_number: str | None = None,
) -> ProviderUpdate | None:
    """Map a Twilio call status (callback or REST resource) onto our states; None if unknown."""
    mapped = _TWILIO.get(call_status)
    if mapped is None:
        return None
    status, outcome = mapped
    if status == COMPLETED and is_machine(answered_by):
        status, outcome = VOICEMAIL, OUTCOME_VOICEMAIL
    seconds = int(duration) if duration not in (None, "") else None
    return ProviderUpdate(
        sid=sid,
        status=status,
        provider_status=call_status,
        outcome=outcome,
        duration_s=seconds,
        error_code=error_code or None,
        error_message=error_message or None,
        from_number=from_number or None,
        answered_by=answered_by or None,
    )


def from_twilio_report(report: dict[str, Any]) -> ProviderUpdate | None:
    """A status report as the API queues it (see ``api/telephony.py``), in our terms."""
    return from_twilio(
        report["sid"],
        report["status"],
        answered_by=report.get("answered_by"),
        duration=report.get("duration"),
        error_code=report.get("error_code"),
        error_message=report.get("error_message"),
        from_number=report.get("from"),
    )


# The outcome names a retry policy uses, and the call outcomes each one covers: "voicemail"
# is any call a machine answered, whether a message was left on it or not.
RETRYABLE_OUTCOMES = {
    "busy": (OUTCOME_BUSY,),
    "no_answer": (OUTCOME_NO_ANSWER,),
    "failed": (OUTCOME_CALL_FAILED,),
    "voicemail": (OUTCOME_VOICEMAIL, OUTCOME_VOICEMAIL_MESSAGE_LEFT),
}
# Final outcomes a manual retry of a batch dials again.
MANUALLY_RETRYABLE_OUTCOMES = frozenset({OUTCOME_BUSY, OUTCOME_NO_ANSWER, OUTCOME_CALL_FAILED})


@dataclass(frozen=True)
class RetryPolicy:
    """How often a recipient is dialed and after which outcomes (default: once)."""

    max_attempts: int = 1
    retry_on: frozenset[str] = frozenset()  # call outcomes
    delays_s: tuple[int, ...] = (300,)

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> RetryPolicy:
        """The policy stored on a batch (its API form)."""
        if not data:
            return cls()
        return cls(
            max_attempts=int(data.get("max_attempts", 1)),
            retry_on=frozenset(
                outcome for name in data.get("retry_on", []) for outcome in RETRYABLE_OUTCOMES[name]
            ),
            delays_s=tuple(data.get("delays_s") or (300,)),
        )

    def delay_after(self, attempts_made: int) -> int:
        """Seconds to wait before attempt ``attempts_made + 1``."""
        return self.delays_s[min(attempts_made - 1, len(self.delays_s) - 1)]


@dataclass(frozen=True)
class CallSnapshot:
    """The fields of a locked call row that decide a transition."""

    status: str
    provider_call_sid: str | None
    first_dispatched: bool
    attempts: int
    previous_sids: frozenset[str] = frozenset()
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    # The answering machine detection's verdict on the current attempt, as recorded from its
    # own callback, and what was done about a machine (``voicemail.ACTION_TAKEN``).
    answered_by: str | None = None
    voicemail_action: str | None = None


@dataclass(frozen=True)
class CounterDeltas:
    """How much each batch counter moves in the transaction of a transition."""

    dispatched: int = 0
    finished: int = 0
    retries: int = 0
    final: int = 0

    def any(self) -> bool:
        """Whether any counter moves."""
        return bool(self.dispatched or self.finished or self.retries or self.final)

    def plus(self, other: CounterDeltas) -> CounterDeltas:
        """Both moves together."""
        return CounterDeltas(
            dispatched=self.dispatched + other.dispatched,
            finished=self.finished + other.finished,
            retries=self.retries + other.retries,
            final=self.final + other.final,
        )


@dataclass(frozen=True)
class Transition:
    """A decided move of one call from ``from_status`` to ``to_status``."""

    from_status: str
    to_status: str
    accepted: bool  # this transition records the provider's acceptance of an attempt
    counts_attempt: bool = False  # the provider gave its answer to a dial: one more attempt
    # Set when the attempt ended with an outcome the retry policy dials again: the call goes
    # back to pending, due after this many seconds, and is not final.
    requeue_delay_s: int | None = None
    deltas: CounterDeltas = field(default_factory=CounterDeltas)


def _counts_attempt(call: CallSnapshot, to_status: str) -> bool:
    return call.status == DIALING and to_status != PENDING


def _attempt_deltas(call: CallSnapshot, to_status: str, *, accepted: bool) -> CounterDeltas:
    counts_attempt = _counts_attempt(call, to_status)
    return CounterDeltas(
        dispatched=1 if accepted and not call.first_dispatched else 0,
        finished=1 if to_status in FINISHED else 0,
        retries=1 if counts_attempt and call.attempts >= 1 else 0,
        final=1 if to_status in FINAL else 0,
    )


def in_light_of(call: CallSnapshot, update: ProviderUpdate) -> ProviderUpdate:
    """The report as the call's own record completes it: a call the detection found a machine
    on ends ``voicemail`` even when its final report does not say so (the verdict came on its
    own callback), and one on which the voicemail message was played ends with the outcome
    that says so."""
    if update.status == COMPLETED and is_machine(update.answered_by or call.answered_by):
        update = replace(update, status=VOICEMAIL, outcome=OUTCOME_VOICEMAIL)
    if update.status == VOICEMAIL and call.voicemail_action == MESSAGE_LEFT:
        update = replace(update, outcome=OUTCOME_VOICEMAIL_MESSAGE_LEFT)
    return update


def plan_provider_update(call: CallSnapshot, update: ProviderUpdate) -> Transition | None:
    """The transition a provider report causes, or None when it changes nothing.

    Reports are applied only forwards: duplicates, late and out-of-order reports, reports about
    an earlier attempt, and anything after a final state are ignored.
    """
    if call.status not in LIVE or update.sid in call.previous_sids:
        return None
    if call.provider_call_sid is not None and call.provider_call_sid != update.sid:
        return None
    if RANK[update.status] <= RANK[call.status]:
        return None
    accepted = call.status == DIALING
    attempts_made = call.attempts + (1 if accepted else 0)
    if (
        update.status in FINISHED
        and update.outcome in call.retry.retry_on
        and attempts_made < call.retry.max_attempts
    ):
        return Transition(
            from_status=call.status,
            to_status=PENDING,
            accepted=accepted,
            counts_attempt=accepted,
            requeue_delay_s=call.retry.delay_after(attempts_made),
            deltas=CounterDeltas(
                dispatched=1 if accepted and not call.first_dispatched else 0,
                retries=1 if accepted and call.attempts >= 1 else 0,
            ),
        )
    return Transition(
        from_status=call.status,
        to_status=update.status,
        accepted=accepted,
        counts_attempt=_counts_attempt(call, update.status),
        deltas=_attempt_deltas(call, update.status, accepted=accepted),
    )


def plan_dial_failure(call: CallSnapshot, to_status: str) -> Transition | None:
    """The transition of a claimed call whose dial ended without a provider call.

    ``to_status`` is FAILED (the provider refused it for good) or PENDING (hand it back to be
    dialed again later; no attempt is counted).
    """
    if call.status != DIALING:
        return None
    return Transition(
        from_status=DIALING,
        to_status=to_status,
        accepted=False,
        counts_attempt=_counts_attempt(call, to_status),
        deltas=_attempt_deltas(call, to_status, accepted=False),
    )


def plan_skip(call: CallSnapshot) -> Transition | None:
    """A claimed call that must not be dialed after all (e.g. do-not-call): cancelled, final."""
    if call.status != DIALING:
        return None
    return Transition(
        from_status=DIALING, to_status=CANCELLED, accepted=False, deltas=CounterDeltas(final=1)
    )


def plan_abandon(call: CallSnapshot) -> Transition | None:
    """A call that will never be dialed (its batch failed): ends failed and counts finished."""
    if call.status != PENDING:
        return None
    return Transition(
        from_status=PENDING,
        to_status=FAILED,
        accepted=False,
        deltas=CounterDeltas(finished=1, final=1),
    )
