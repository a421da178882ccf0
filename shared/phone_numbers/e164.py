"""Phone number normalisation: every number we store or dial is E.164."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from phonenumbers import PhoneMetadata, PhoneNumber
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, region_code_for_country_code


class InvalidPhoneNumber(ValueError):
    """The text is not a valid, dialable phone number."""


def normalize_e164(raw: str, default_region: str | None = None) -> str:
    """Parse ``raw`` (international, or local to ``default_region``) and return it as E.164."""
    if _valid_as_written(raw):
        return raw
    try:
        parsed = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"'{raw}' is not a phone number: {exc}") from exc
    if not phonenumbers.is_valid_number(parsed):
        raise InvalidPhoneNumber(f"'{raw}' is not a valid phone number")
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


# Text already in E.164: '+', a country code and a national number, ASCII digits only (other
# scripts' digits are left to parsing, which turns them into ASCII ones).
_E164 = re.compile(r"\+([1-9][0-9]{1,16})")
_NOTHING = re.compile(r"(?!)")  # a country without a national prefix: nothing to strip
_ANYTHING = re.compile("")  # a country code without metadata: every number goes to parsing


@lru_cache(maxsize=512)
def _national_prefix(country_code: int) -> re.Pattern[str]:
    """What ``phonenumbers.parse`` may strip from the start of a national number of this
    country; a number it matches is left to parsing."""
    region = region_code_for_country_code(country_code)
    metadata = PhoneMetadata.metadata_for_region_or_calling_code(country_code, region)
    if metadata is None:
        return _ANYTHING
    prefix = metadata.national_prefix_for_parsing
    return re.compile(prefix) if prefix else _NOTHING


def _valid_as_written(raw: str) -> bool:
    """Whether ``raw`` is a valid number already in E.164, found without ``phonenumbers.parse``.

    Most numbers come in E.164, and validating 10,000 of them is most of a submit. Parsing
    such a number finds its country code as done here (the shortest known prefix) and keeps the
    rest as the national number, unless that starts with a zero (kept as a flag) or with the
    country's national prefix (which parsing may strip): those, and every number found invalid
    here, go through ``phonenumbers.parse``, which gives the answer and the error message.
    """
    match = _E164.fullmatch(raw)
    if match is None:
        return False
    digits = match.group(1)
    for size in (1, 2, 3):
        country_code = int(digits[:size])
        if country_code in COUNTRY_CODE_TO_REGION_CODE:
            national = digits[size:]
            if not national or national[0] == "0" or _national_prefix(country_code).match(national):
                return False
            number = PhoneNumber(country_code=country_code, national_number=int(national))
            return bool(phonenumbers.is_valid_number(number))
    return False


def is_known_region(code: str) -> bool:
    """Whether ``code`` is a region phonenumbers can parse local numbers of."""
    return code in phonenumbers.SUPPORTED_REGIONS


# Fewer digits than this, without a '+', may as well be a national number: not repaired.
MIN_REPAIRABLE_DIGITS = 11
# A number a spreadsheet turned into a float: one digit, optional decimals, a positive exponent.
_SCIENTIFIC = re.compile(r"^(\d)(?:\.(\d+))?[eE]\+?(\d{1,2})$")


def restore_dropped_plus(raw: str) -> str:
    """Put back the leading ``+`` a spreadsheet dropped from an E.164 number, when unambiguous.

    ``12125550100`` and ``1.2125550100E+10`` become ``+12125550100``: the text is digits only
    (scientific notation only when its mantissa still holds every digit), at least eleven of
    them (fewer may be a national number), and is a valid number once ``+`` is prepended. Text
    starting with ``+``, or with other characters, is returned stripped and left to
    ``normalize_e164``. Raise ``InvalidPhoneNumber`` for digits that are too few or not a valid
    number with ``+``, and for scientific notation whose digits were rounded away.
    """
    text = raw.strip()
    if text.startswith("+"):
        return text
    scientific = _SCIENTIFIC.match(text)
    if scientific:
        digits = scientific.group(1) + (scientific.group(2) or "")
        if len(digits) != int(scientific.group(3)) + 1:
            raise InvalidPhoneNumber(
                f"'{raw}' is in scientific notation with digits rounded away; "
                "format the column as text and export the file again"
            )
    elif text.isascii() and text.isdigit():
        digits = text
    else:
        return text
    if len(digits) < MIN_REPAIRABLE_DIGITS:
        # 2015550142 is a US national number and, with a '+', an Egyptian one: never guess.
        raise InvalidPhoneNumber(
            f"'{raw}' has no leading '+' and may be a national number; "
            "write it in E.164 (+, country code, number)"
        )
    try:
        return normalize_e164("+" + digits)
    except InvalidPhoneNumber:
        raise InvalidPhoneNumber(
            f"'{raw}' has no leading '+' and is not a valid number with one added; "
            "write it in E.164 (+, country code, number)"
        ) from None
