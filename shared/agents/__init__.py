"""Agents (the prompt templates and voice settings calls are made with, also named by their AI
settings template id) and the registering of caller phone numbers.

* ``service``: create, read, list and update agents; register caller numbers;
* ``repository``: every query on ``agents``.
"""
