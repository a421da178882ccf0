"""Contacts: the workspace's contact book that call-bulk fills, and each contact's calls.

* ``service``: the contact views;
* ``repository``: every query on ``contacts``.
"""
