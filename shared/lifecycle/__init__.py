"""The lifecycle of calls and batches: their statuses (``states``), every transition decided
(``plans``, pure), written (``store``, the only writer of a status or a counter) and applied
with what it leaves to the end of its transaction (``transitions``, ``effects``)."""
