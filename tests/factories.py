"""The API request builders the tests use; they live in ``harness.factories``, which the
benchmarks use too."""

from harness.factories import (
    DEFAULT_FIRST_MESSAGE,
    DEFAULT_PROMPT,
    create_agent,
    create_connection,
    recipients,
    register_number,
    submit,
)

__all__ = [
    "DEFAULT_FIRST_MESSAGE",
    "DEFAULT_PROMPT",
    "create_agent",
    "create_connection",
    "recipients",
    "register_number",
    "submit",
]
