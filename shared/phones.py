"""Phone number normalisation: every number we store or dial is E.164."""

from __future__ import annotations

import phonenumbers


class InvalidPhoneNumber(ValueError):
    """The text is not a valid, dialable phone number."""


def normalize_e164(raw: str, default_region: str | None = None) -> str:
    """Parse ``raw`` (international, or local to ``default_region``) and return it as E.164."""
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"'{raw}' is not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber(f"'{raw}' is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def is_known_region(code: str) -> bool:
    """Whether ``code`` is a region phonenumbers can parse local numbers of."""
    return code in phonenumbers.SUPPORTED_REGIONS
