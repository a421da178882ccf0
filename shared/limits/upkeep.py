"""Keeping the live-call slots in Redis true to PostgreSQL: rebuilt when Redis lost them, leaks
given back."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from shared.db import Transaction
from shared.limits import repository as limits_repo
from shared.limits import slots
from shared.telephony import registry

log = logging.getLogger(__name__)


def restore_slots(transaction: Transaction) -> bool:
    """Rebuild the live-call slots in Redis from the calls PostgreSQL has claimed or live, if
    Redis lost them; True when this process rebuilt them."""

    def read_live() -> list[tuple[str, list[str]]]:
        with transaction() as session:
            rows = limits_repo.slot_holders(session)
        return [
            (
                row.id,
                slots.slot_names(
                    row.batch_id,
                    row.workspace_id,
                    registry.account_key(row.provider, row.credentials_ref),
                ),
            )
            for row in rows
        ]

    def read_ended(call_ids: Sequence[str]) -> set[str]:
        with transaction() as session:
            return limits_repo.not_holding_slots(session, call_ids)

    restored = slots.restore(read_live, read_ended)
    if restored:
        log.warning("live-call slots were lost with Redis's state; rebuilt from PostgreSQL")
    return restored


# A slot held this long by a call that is neither claimed nor live is a leak (a release that
# failed): the audit gives it back. Taking a slot and claiming the call take milliseconds.
SLOT_LEAK_AGE_S = 60.0


def audit_slots(transaction: Transaction) -> int:
    """Give back the slots held by calls that PostgreSQL says are neither claimed nor live
    (pending or final) since longer than ``SLOT_LEAK_AGE_S``; how many calls had such slots."""
    held = slots.held_longer_than(SLOT_LEAK_AGE_S)
    if not held:
        return 0
    with transaction() as session:
        leaked = limits_repo.not_holding_slots(session, list(held))
    slots.release_many([(call_id, held[call_id]) for call_id in sorted(leaked)])
    if leaked:
        log.warning("gave back %d live-call slots of calls that had ended", len(leaked))
    return len(leaked)
