"""Workspaces and their API keys.

* ``service``: creating keys and authenticating requests by them;
* ``repository``: every query on ``workspaces`` and ``api_keys``.
"""
