"""What the transitions applied in one transaction do once, at its end: the dial log, the
batches' counter moves (added up per batch; batch rows are locked last, in id order), the
``call.ended`` and ``batch.completed`` webhook events, and, after commit, the live-call slots
the calls gave back."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from shared.db import after_commit
from shared.dispatch import repository as calls_repo
from shared.lifecycle import store
from shared.lifecycle.plans import BulkMove, CounterDeltas, Transition
from shared.lifecycle.states import FINAL
from shared.limits import slots
from shared.webhooks import events as webhooks


@dataclass
class Effects:
    """Collects what applied transitions leave to the end of their transaction; ``finish``
    does it."""

    counters: dict[str, CounterDeltas] = field(default_factory=dict)
    dialed: list[str] = field(default_factory=list)
    ended: list[str] = field(default_factory=list)
    releases: list[tuple[str, list[str]]] = field(default_factory=list)

    def _count(self, batch_id: str, deltas: CounterDeltas) -> None:
        if deltas.any():
            counted = self.counters.get(batch_id, CounterDeltas())
            self.counters[batch_id] = counted.plus(deltas)

    def applied(self, call_id: str, locked: store.LockedCall, transition: Transition) -> None:
        """Note what an applied transition of one call (``locked``: where it counts) leaves to
        the end of the transaction."""
        if transition.accepted:
            self.dialed.append(call_id)
        if transition.releases_slot:
            names = slots.slot_names(locked.batch_id, locked.workspace_id, locked.account)
            self.releases.append((call_id, names))
        if transition.final:
            self.ended.append(call_id)
        self._count(locked.batch_id, transition.deltas)

    def bulk_moved(self, batch_id: str, call_ids: Sequence[str], move: BulkMove) -> None:
        """Note calls of a batch moved together (none of them held a slot)."""
        if move.to_status in FINAL:
            self.ended.extend(call_ids)
        self._count(batch_id, move.deltas(len(call_ids)))

    def finish(self, session: Session) -> None:
        """Do it all, in the transaction (the slots after its commit)."""
        if self.dialed:
            calls_repo.log_dials(session, self.dialed)
        if self.ended:
            webhooks.calls_ended(session, self.ended)
        for batch_id in sorted(self.counters):
            if store.move_counters(session, batch_id, self.counters[batch_id]):
                webhooks.batch_completed(session, batch_id)
        releases = self.releases
        if releases:
            after_commit(session, lambda: slots.release_many(releases))
