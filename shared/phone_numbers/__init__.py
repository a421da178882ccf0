"""Phone numbers: parsing what clients send into E.164, and the caller numbers a workspace
registers.

* ``e164``: normalising numbers (and repairing a ``+`` a spreadsheet dropped);
* ``repository``: every query on ``phone_numbers``.
"""
