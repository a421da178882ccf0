"""The per-workspace do-not-call list.

* ``service``: add, remove and list numbers, normalised to E.164;
* ``repository``: every query on ``dnc_numbers``.
"""
