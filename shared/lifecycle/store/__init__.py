"""The only code that writes a status or a counter: each write is a guarded UPDATE that applies
a transition ``shared.lifecycle.plans`` decided (a call moves only from the status it was
decided from; a batch's counters move in the transaction of the call transitions they
count). Reads that lock rows for a transition live here too. Calls in ``calls``, batches in
``batches``; every name is importable from ``shared.lifecycle.store``."""

from shared.lifecycle.store.batches import (
    CALL_COPY_COLUMNS,
    claim_due_batches,
    fail_batch,
    insert_batch,
    move_counters,
    pause_running,
    set_batch_status,
    set_paused,
    start_batch_if_due,
)
from shared.lifecycle.store.calls import (
    NOW,
    ClaimedCall,
    LockedCall,
    Move,
    Orphan,
    apply_transitions,
    claim_for_dial,
    finalise_orphans,
    lock_call,
    lock_calls,
    move_batch_calls,
    release_claim,
)

__all__ = [
    "CALL_COPY_COLUMNS",
    "NOW",
    "ClaimedCall",
    "LockedCall",
    "Move",
    "Orphan",
    "apply_transitions",
    "claim_due_batches",
    "claim_for_dial",
    "fail_batch",
    "finalise_orphans",
    "insert_batch",
    "lock_call",
    "lock_calls",
    "move_batch_calls",
    "move_counters",
    "pause_running",
    "release_claim",
    "set_batch_status",
    "set_paused",
    "start_batch_if_due",
]
