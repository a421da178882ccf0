"""Applying transitions: lock the rows, decide (``plans``), write (``store``), and leave the
rest to the end of the transaction (``effects``). The services call these; none of them
writes a status or a counter itself."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from shared import messaging
from shared.batches import repository as batches_repo
from shared.db import after_commit
from shared.dispatch import repository as calls_repo
from shared.errors import ProviderError
from shared.lifecycle import plans, store
from shared.lifecycle.effects import Effects
from shared.lifecycle.moves import NOW, Move
from shared.lifecycle.plans import (
    ABANDON_PENDING,
    CANCEL_PENDING,
    MANUAL_RETRY,
    CallSnapshot,
    ProviderUpdate,
    Transition,
)
from shared.lifecycle.states import FINAL, BatchStatus, CallStatus, Outcome
from shared.voicemail import MachineAction, plan_machine_action

log = logging.getLogger(__name__)


def _ended_attempt(
    snapshot: CallSnapshot,
    transition: Transition,
    sid: str | None,
    outcome: str | None,
    duration_s: int | None = None,
) -> dict[str, Any] | None:
    """The attempt-history entry of a transition that ends an attempt, else None."""
    if not transition.ends_attempt:
        return None
    return {
        "attempt": snapshot.attempts + (1 if transition.counts_attempt else 0),
        "provider_call_sid": sid,
        "outcome": outcome,
        "duration_s": duration_s,
        "ended_at_unix": int(time.time()),
    }


@dataclass(frozen=True)
class _Planned:
    """A transition decided for a call, with where it counts (``store.LockedCall``)."""

    move: Move
    locked: store.LockedCall
    # The provider's report says our credentials were refused (a SIP trunk's 403/407): the
    # call's batch fails with this reason once the report is applied.
    fails_batch: str | None = None

    @property
    def batch_id(self) -> str:
        """The batch the call counts in."""
        return self.locked.batch_id

    def note(self, effects: Effects) -> None:
        effects.applied(self.move.call_id, self.locked, self.move.transition)


def _apply(session: Session, planned: _Planned, effects: Effects | None = None) -> bool:
    """Apply a decided transition and move the counters it counts, in one transaction (with
    ``effects``, the caller finishes the end-of-transaction part for several at once)."""
    if not store.apply_transitions(session, [planned.move]):
        return False
    own = effects or Effects()
    planned.note(own)
    if effects is None:
        own.finish(session)
    return True


def _update_values(update: ProviderUpdate) -> dict[str, Any]:
    values: dict[str, Any] = {
        "provider_call_sid": update.sid,
        "provider_status": update.provider_status,
    }
    if update.from_number:
        values["caller_number"] = update.from_number
    if update.answered_by:
        values["answered_by"] = update.answered_by
    if update.status == CallStatus.IN_PROGRESS:
        values["answered_at"] = NOW
    if update.status in FINAL:
        values.update(
            outcome=update.outcome,
            ended_at=NOW,
            duration_s=update.duration_s,
            error_code=update.error_code,
            error_message=update.error_message,
        )
    return values


def _plan_provider_update(
    call_id: str, update: ProviderUpdate, locked: store.LockedCall
) -> _Planned | None:
    """The transition a provider report makes, or None for a duplicate or stale report."""
    snapshot = locked.snapshot
    update = plans.in_light_of(snapshot, update)
    transition = plans.plan_provider_update(snapshot, update)
    if transition is None:
        return None
    ended = _ended_attempt(snapshot, transition, update.sid, update.outcome, update.duration_s)
    move = Move(call_id, transition, _update_values(update), ended)
    return _Planned(move, locked, plans.batch_failure(update))


def _fail_refused_batches(session: Session, refused: dict[str, str]) -> None:
    """Fail the batches whose calls the provider refused our credentials for (after their
    calls' moves; batch rows in id order, as everywhere)."""
    for batch_id in sorted(refused):
        if fail_batch(session, batch_id, refused[batch_id]):
            log.error("failing batch %s: %s", batch_id, refused[batch_id])


def apply_provider_update(
    session: Session,
    call_id: str,
    update: ProviderUpdate,
    effects: Effects | None = None,
    locked: store.LockedCall | None = None,
    refused: dict[str, str] | None = None,
) -> bool:
    """Move a call forward on a provider report; duplicates and stale reports change nothing.
    A report that our credentials were refused fails the call's batch too (with ``effects``,
    the caller does that once they are finished: the batch is noted in ``refused``)."""
    locked = locked or store.lock_call(session, call_id)
    if locked is None:
        log.warning("provider report for unknown call %s", call_id)
        return False
    planned = _plan_provider_update(call_id, update, locked)
    if planned is None or not _apply(session, planned, effects):
        return False
    if planned.fails_batch is not None:
        if effects is None:
            _fail_refused_batches(session, {planned.batch_id: planned.fails_batch})
        elif refused is not None:
            refused.setdefault(planned.batch_id, planned.fails_batch)
    return True


@dataclass(frozen=True)
class MachineVerdict:
    """The answering machine detection's verdict on a call's provider call ``sid``."""

    call_id: str
    sid: str
    answered_by: str


def _record_machine_verdicts(session: Session, verdicts: Sequence[MachineVerdict]) -> int:
    """Record the verdicts on their calls (locked already) and, after commit, have the
    machines that answered calls whose voicemail behaviour acts on them dealt with; how many
    were recorded."""
    recorded = calls_repo.record_answered_by(
        session, [(v.call_id, v.sid, v.answered_by) for v in verdicts]
    )
    to_answer = sorted(
        {
            row.id
            for row in recorded
            if plan_machine_action(row.voicemail_behavior, row.answered_by, live=True)
            is not MachineAction.NOTHING
        }
    )
    if to_answer:

        def publish() -> None:
            messaging.publish_many(
                messaging.TASK_ANSWER_MACHINE, [[call_id] for call_id in to_answer]
            )

        after_commit(session, publish)
    return len(recorded)


def apply_provider_reports(
    session: Session,
    reports: list[tuple[str, ProviderUpdate]],
    verdicts: Sequence[MachineVerdict] = (),
) -> int:
    """Apply many provider reports in one transaction, answering machine detection
    ``verdicts`` first (a call's final report in the same message then ends it as a
    voicemail); how many moved a call.

    Every call row is locked first, in one statement and in id order, and the batch rows last,
    once each with the counter moves added up, in id order: so these transactions take rows in
    the same order as each other and as a single transition (its call, then its batch), and
    never deadlock with them. Reports of one call keep their arrival order (any order would be
    safe); the second report of a call reads the call again, as the first moved it.
    """
    judged = {verdict.call_id for verdict in verdicts}
    snapshots = store.lock_calls(session, sorted({call_id for call_id, _ in reports} | judged))
    if verdicts:
        _record_machine_verdicts(session, verdicts)
    effects = Effects()
    reported = Counter(call_id for call_id, _ in reports)
    # A call a verdict was just recorded on is read again for its reports, as for a second one.
    for call_id in judged:
        snapshots.pop(call_id, None)
        if call_id in reported:
            reported[call_id] += 1
    # A call reported once here (nearly always: a carrier posts a call's next report after the
    # previous one was answered) moves in one statement with the others of its shape.
    planned = []
    for call_id, update in reports:
        if reported[call_id] > 1:
            continue
        locked = snapshots.get(call_id)
        if locked is None:
            log.warning("provider report for unknown call %s", call_id)
            continue
        plan = _plan_provider_update(call_id, update, locked)
        if plan is not None:
            planned.append(plan)
    moved = store.apply_transitions(session, [plan.move for plan in planned])
    refused: dict[str, str] = {}
    for plan in planned:
        if plan.move.call_id in moved:
            plan.note(effects)
            if plan.fails_batch is not None:
                refused.setdefault(plan.batch_id, plan.fails_batch)
    count = len(moved)
    for call_id, update in reports:
        if reported[call_id] > 1:
            # None for a call's later reports: apply_provider_update reads the call again.
            first_read = snapshots.pop(call_id, None)
            count += apply_provider_update(session, call_id, update, effects, first_read, refused)
    effects.finish(session)
    _fail_refused_batches(session, refused)
    return count


def fail_claimed_call(
    session: Session, call_id: str, outcome: Outcome, error: ProviderError | None = None
) -> bool:
    """dialing → failed for a dial that can never succeed: refused by the provider (``error``,
    an attempt), or never made (no attempt)."""
    locked = store.lock_call(session, call_id)
    if locked is None:
        return False
    transition = plans.plan_dial_failure(locked.snapshot, provider_answered=error is not None)
    if transition is None:
        return False
    values: dict[str, Any] = {"outcome": outcome, "ended_at": NOW}
    if error is not None:
        values.update(
            error_code=str(error.code) if error.code is not None else None,
            error_message=error.message[:1000],
        )
    ended = _ended_attempt(locked.snapshot, transition, None, outcome)
    move = Move(call_id, transition, values, ended)
    return _apply(session, _Planned(move, locked))


def skip_claimed_call(session: Session, call_id: str, outcome: Outcome) -> bool:
    """dialing → cancelled for a call that must not be dialed after all."""
    locked = store.lock_call(session, call_id)
    if locked is None:
        return False
    transition = plans.plan_skip(locked.snapshot)
    if transition is None:
        return False
    move = Move(call_id, transition, {"outcome": outcome, "ended_at": NOW})
    return _apply(session, _Planned(move, locked))


def hand_back(session: Session, call_id: str, token: str, delay_s: float) -> bool:
    """A claimed call that was not placed goes back to pending, due after ``delay_s``; or, in a
    batch cancelled or failed meanwhile, ends as that batch's pending calls did (a pending
    call of such a batch would never be final). False if the claim was no longer ours.
    """
    status = batches_repo.status_of_call_batch(session, call_id)
    if status == BatchStatus.CANCELLED:
        return skip_claimed_call(session, call_id, Outcome.BATCH_CANCELLED)
    if status == BatchStatus.FAILED:
        return fail_claimed_call(session, call_id, Outcome.BATCH_FAILED)
    return store.release_claim(session, call_id, token, delay_s)


def _move_batch_calls(session: Session, batch_id: str, move: plans.BulkMove) -> list[str]:
    effects = Effects()
    call_ids = store.move_batch_calls(session, batch_id, move)
    if call_ids:
        effects.bulk_moved(batch_id, call_ids, move)
        effects.finish(session)
    return call_ids


def fail_batch(session: Session, batch_id: str, reason: str) -> bool:
    """The batch cannot proceed: it ends failed and its undialed calls fail with it; False
    when it had ended already."""
    if not store.fail_batch(session, batch_id, reason):
        return False
    _move_batch_calls(session, batch_id, ABANDON_PENDING)
    return True


def cancel_batch(session: Session, batch_id: str) -> None:
    """The (locked, open) batch is cancelled, and its undialed calls with it."""
    store.set_batch_status(session, batch_id, BatchStatus.CANCELLED)
    _move_batch_calls(session, batch_id, CANCEL_PENDING)


def retry_failed_calls(session: Session, batch_id: str) -> list[str]:
    """The (locked, started) batch's calls that failed with a retryable outcome are pending
    again, due now, and the batch is in progress again; their ids (to publish)."""
    call_ids = _move_batch_calls(session, batch_id, MANUAL_RETRY)
    if call_ids:
        store.set_batch_status(session, batch_id, BatchStatus.IN_PROGRESS)
    return call_ids


def finalise_orphans(session: Session, within_s: float, limit: int) -> int:
    """Pending calls a cancel or a failing batch passed over while a claim held them, and which
    the claim then left pending: final now, counted, and reported like their batch's others;
    how many."""
    orphans = store.finalise_orphans(session, within_s, limit)
    effects = Effects()
    by_batch: dict[tuple[str, plans.BulkMove], list[str]] = {}
    for orphan in orphans:
        by_batch.setdefault((orphan.batch_id, orphan.move), []).append(orphan.call_id)
    for (batch_id, move), call_ids in by_batch.items():
        effects.bulk_moved(batch_id, call_ids, move)
    effects.finish(session)
    return len(orphans)
