"""Every transition of a call and of a batch, decided: pure functions that take what the row
says and return the new state with the counter moves it makes. ``shared.lifecycle.store``
writes what they decide; nothing else writes a status or a counter."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from shared.lifecycle.states import (
    BATCH_OPEN,
    FINAL,
    FINISHED,
    LIVE,
    RANK,
    RETRYABLE_OUTCOMES,
    BatchStatus,
    CallStatus,
    Outcome,
)
from shared.voicemail import MESSAGE_LEFT, is_machine


@dataclass(frozen=True)
class ProviderUpdate:
    """What the provider says about a call, in our terms (each provider's adapter maps its own
    report onto this)."""

    sid: str
    status: CallStatus
    provider_status: str  # the provider's own word, kept for the record
    outcome: Outcome | None = None
    duration_s: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    # The caller number the call was placed from, when the report tells it.
    from_number: str | None = None
    # The answering machine detection's verdict, when the report carries it.
    answered_by: str | None = None


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

    status: CallStatus
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

    def times(self, count: int) -> CounterDeltas:
        """The move of ``count`` such transitions."""
        return CounterDeltas(
            dispatched=self.dispatched * count,
            finished=self.finished * count,
            retries=self.retries * count,
            final=self.final * count,
        )


@dataclass(frozen=True)
class Transition:
    """A decided move of one call from ``from_status`` to ``to_status``."""

    from_status: CallStatus
    to_status: CallStatus
    accepted: bool = False  # this transition records the provider's acceptance of an attempt
    counts_attempt: bool = False  # the provider gave its answer to a dial: one more attempt
    # Set when the attempt ended with an outcome the retry policy dials again: the call goes
    # back to pending, due after this many seconds, and is not final.
    requeue_delay_s: float | None = None
    deltas: CounterDeltas = field(default_factory=CounterDeltas)
    # The call's attempt ends here (it is recorded in the call's attempt history).
    ends_attempt: bool = False

    @property
    def final(self) -> bool:
        """The call is final after this transition."""
        return self.to_status in FINAL

    @property
    def releases_slot(self) -> bool:
        """The call stops holding its live-call slot."""
        return self.from_status in LIVE and self.to_status not in LIVE


def _attempt_deltas(
    call: CallSnapshot, to_status: CallStatus, *, accepted: bool, counts: bool
) -> CounterDeltas:
    return CounterDeltas(
        dispatched=1 if accepted and not call.first_dispatched else 0,
        finished=1 if to_status in FINISHED else 0,
        retries=1 if counts and call.attempts >= 1 else 0,
        final=1 if to_status in FINAL else 0,
    )


def in_light_of(call: CallSnapshot, update: ProviderUpdate) -> ProviderUpdate:
    """The report as the call's own record completes it: a call the detection found a machine
    on ends ``voicemail`` even when its final report does not say so (the verdict came on its
    own callback), and one on which the voicemail message was played ends with the outcome
    that says so."""
    if update.status == CallStatus.COMPLETED and is_machine(update.answered_by or call.answered_by):
        update = replace(update, status=CallStatus.VOICEMAIL, outcome=Outcome.VOICEMAIL)
    if update.status == CallStatus.VOICEMAIL and call.voicemail_action == MESSAGE_LEFT:
        update = replace(update, outcome=Outcome.VOICEMAIL_MESSAGE_LEFT)
    return update


def plan_provider_update(call: CallSnapshot, update: ProviderUpdate) -> Transition | None:
    """The transition a provider report causes, or None when it changes nothing.

    Reports are applied only forwards: duplicates, late and out-of-order reports, reports about
    an earlier attempt, and anything after a final state are ignored. The first report of an
    attempt (the provider's answer to the dial, or a callback that came before it) records the
    provider's acceptance and counts the attempt.
    """
    if call.status not in LIVE or update.sid in call.previous_sids:
        return None
    if call.provider_call_sid is not None and call.provider_call_sid != update.sid:
        return None
    if RANK[update.status] <= RANK[call.status]:
        return None
    accepted = call.status == CallStatus.DIALING
    attempts_made = call.attempts + (1 if accepted else 0)
    if (
        update.status in FINISHED
        and update.outcome in call.retry.retry_on
        and attempts_made < call.retry.max_attempts
    ):
        return Transition(
            from_status=call.status,
            to_status=CallStatus.PENDING,
            accepted=accepted,
            counts_attempt=accepted,
            requeue_delay_s=call.retry.delay_after(attempts_made),
            deltas=CounterDeltas(
                dispatched=1 if accepted and not call.first_dispatched else 0,
                retries=1 if accepted and call.attempts >= 1 else 0,
            ),
            ends_attempt=True,
        )
    return Transition(
        from_status=call.status,
        to_status=update.status,
        accepted=accepted,
        counts_attempt=accepted,
        deltas=_attempt_deltas(call, update.status, accepted=accepted, counts=accepted),
        ends_attempt=update.status in FINAL,
    )


def batch_failure(update: ProviderUpdate) -> str | None:
    """Why a provider report fails its call's batch, or None: the provider refused our
    credentials (a SIP trunk's 403 or 407 comes in a status callback, after the provider took
    the dial), and no call of that account can proceed, as when a dial's answer says so."""
    if update.outcome != Outcome.PROVIDER_AUTH_FAILED:
        return None
    return f"provider rejected the credentials: {update.error_message or update.provider_status}"


def plan_dial_failure(call: CallSnapshot, *, provider_answered: bool) -> Transition | None:
    """A claimed call whose dial ended for good without a provider call: failed, final.

    With ``provider_answered`` the provider refused the dial (an error, bad credentials): that
    is an attempt. Otherwise the call was never dialed (no number to dial, its batch failed)
    and no attempt is counted.
    """
    if call.status != CallStatus.DIALING:
        return None
    return Transition(
        from_status=CallStatus.DIALING,
        to_status=CallStatus.FAILED,
        counts_attempt=provider_answered,
        deltas=_attempt_deltas(call, CallStatus.FAILED, accepted=False, counts=provider_answered),
        ends_attempt=provider_answered,
    )


def plan_skip(call: CallSnapshot) -> Transition | None:
    """A claimed call that must not be dialed after all (do-not-call, its batch cancelled,
    outside any calling window): cancelled, final, never an attempt."""
    if call.status != CallStatus.DIALING:
        return None
    return Transition(
        from_status=CallStatus.DIALING,
        to_status=CallStatus.CANCELLED,
        deltas=CounterDeltas(final=1),
    )


def status_at_submit(excluded: Outcome | None) -> tuple[CallStatus, Outcome | None]:
    """A new call's status and outcome: pending, or cancelled (final, never dialed) when it is
    excluded at submit (do-not-call, a repeated number)."""
    return (CallStatus.PENDING, None) if excluded is None else (CallStatus.CANCELLED, excluded)


# A claim handed back (the dial never reached the provider): pending again, no counter moves.
RELEASE = Transition(from_status=CallStatus.DIALING, to_status=CallStatus.PENDING)
# A due pending call taken by a worker to be dialed.
CLAIM = Transition(from_status=CallStatus.PENDING, to_status=CallStatus.DIALING)


@dataclass(frozen=True)
class BulkMove:
    """The same transition of every call of a batch in ``from_status`` (restricted to
    ``outcomes`` when given): the new status and outcome, and each call's counter move."""

    from_status: CallStatus
    to_status: CallStatus
    outcome: Outcome | None
    per_call: CounterDeltas
    outcomes: frozenset[Outcome] | None = None

    def deltas(self, count: int) -> CounterDeltas:
        """The counter move of ``count`` calls moved."""
        return self.per_call.times(count)


# The undialed calls of a cancelled batch: cancelled, final, not finished.
CANCEL_PENDING = BulkMove(
    CallStatus.PENDING, CallStatus.CANCELLED, Outcome.BATCH_CANCELLED, CounterDeltas(final=1)
)
# The undialed calls of a failed batch: failed, final and finished.
ABANDON_PENDING = BulkMove(
    CallStatus.PENDING,
    CallStatus.FAILED,
    Outcome.BATCH_FAILED,
    CounterDeltas(finished=1, final=1),
)
# A manual retry of a batch: calls that failed with a retryable outcome are pending again and
# no longer finished or final.
MANUAL_RETRY = BulkMove(
    CallStatus.FAILED,
    CallStatus.PENDING,
    None,
    CounterDeltas(finished=-1, final=-1),
    outcomes=frozenset({Outcome.BUSY, Outcome.NO_ANSWER, Outcome.CALL_FAILED}),
)


def orphan_move(batch_status: BatchStatus) -> BulkMove:
    """A pending call left in a batch that ended (a claim held it while the batch was
    cancelled or failed) ends as its batch's other pending calls did."""
    return CANCEL_PENDING if batch_status == BatchStatus.CANCELLED else ABANDON_PENDING


class RunState(StrEnum):
    """Whether a batch's calls may be placed now, as a dial reads it right before its request."""

    RUNNING = "running"
    PAUSED = "paused"
    NOT_STARTED = "not_started"
    CANCELLED = "cancelled"
    ENDED = "ended"  # completed or failed
    MISSING = "missing"


def run_state(status: BatchStatus | None, paused: bool) -> RunState:
    """The run state of a batch of this status and pause mark (None: no such batch)."""
    if status is None:
        return RunState.MISSING
    if status == BatchStatus.CANCELLED:
        return RunState.CANCELLED
    if status in (BatchStatus.COMPLETED, BatchStatus.FAILED):
        return RunState.ENDED
    if paused:
        return RunState.PAUSED
    return RunState.RUNNING if status == BatchStatus.IN_PROGRESS else RunState.NOT_STARTED


def status_on_start(all_calls_final: bool) -> BatchStatus:
    """A due pending batch starts in progress, or completed when no call is left to make."""
    return BatchStatus.COMPLETED if all_calls_final else BatchStatus.IN_PROGRESS


class Control(StrEnum):
    """What a control request does to a batch in the state it found it."""

    APPLY = "apply"
    NOTHING = "nothing"  # already so: the request is idempotent
    REFUSE = "refuse"  # 409


@dataclass(frozen=True)
class ControlPlan:
    """A control request's decision; ``reason`` says why it is refused."""

    control: Control
    reason: str = ""


_APPLY = ControlPlan(Control.APPLY)
_NOTHING = ControlPlan(Control.NOTHING)


def plan_cancel(status: BatchStatus) -> ControlPlan:
    """A pending or running batch is cancelled (its undialed calls with it: CANCEL_PENDING)."""
    if status == BatchStatus.CANCELLED:
        return _NOTHING
    if status not in BATCH_OPEN:
        return ControlPlan(
            Control.REFUSE,
            f"the batch is {status}; only a pending or running batch can be cancelled",
        )
    return _APPLY


def plan_pause(status: BatchStatus, paused: bool) -> ControlPlan:
    """A pending or running batch is paused (keeps its place; places no new call)."""
    if status not in BATCH_OPEN:
        return ControlPlan(
            Control.REFUSE, f"the batch is {status}; only a pending or running batch can be paused"
        )
    return _NOTHING if paused else _APPLY


def plan_resume(paused: bool) -> ControlPlan:
    """A paused batch resumes, whatever paused it."""
    return _APPLY if paused else _NOTHING


def plan_manual_retry(status: BatchStatus) -> ControlPlan:
    """A started, uncancelled batch dials its failed recipients again (MANUAL_RETRY) and is in
    progress again."""
    if status == BatchStatus.CANCELLED:
        return ControlPlan(Control.REFUSE, "a cancelled batch cannot be retried")
    if status == BatchStatus.PENDING:
        return ControlPlan(Control.REFUSE, "the batch has not started yet")
    return _APPLY


def can_fail(status: BatchStatus) -> bool:
    """Only a batch that has not ended can fail (its undialed calls with it: ABANDON_PENDING)."""
    return status in BATCH_OPEN
