"""Phone number normalisation, against phonenumbers' own parsing."""

from __future__ import annotations

from collections.abc import Iterator

import phonenumbers
import pytest

from shared.phone_numbers.e164 import InvalidPhoneNumber, normalize_e164

ARABIC_INDIC_ZERO = 0x0660
FULLWIDTH_ZERO = 0xFF10


def _digits_of(ascii_digits: str, zero: int) -> str:
    """The same digits written in the script whose zero is the code point ``zero``."""
    return "".join(chr(zero + int(digit)) for digit in ascii_digits)


def _by_parsing(raw: str) -> str | None:
    """What parsing ``raw`` with phonenumbers, validating and formatting it gives."""
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def _candidates() -> Iterator[str]:
    """Example numbers of every region, type and non-geographic entity, in E.164, and variants
    of each: a digit fewer or more, a zero or a national prefix after the country code."""
    examples = [
        phonenumbers.example_number_for_type(region, kind)
        for region in phonenumbers.SUPPORTED_REGIONS
        for kind in range(12)
    ] + [
        phonenumbers.example_number_for_non_geo_entity(code)
        for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS
    ]
    for example in examples:
        if example is None:
            continue
        e164 = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)
        code = str(example.country_code)
        national = e164[1 + len(code) :]
        yield e164
        yield e164[:-1]
        yield e164 + "1"
        yield f"+{code}0{national}"
        yield f"+{code}1{national}"
        yield f"+{code}8{national}"
        yield e164[:-2] + "99"


def test_every_number_in_e164_is_judged_as_phonenumbers_parsing_judges_it():
    checked = 0
    for raw in _candidates():
        expected = _by_parsing(raw)
        if expected is None:
            with pytest.raises(InvalidPhoneNumber):
                normalize_e164(raw)
        else:
            assert normalize_e164(raw) == expected, raw
        checked += 1
    assert checked > 5_000


@pytest.mark.parametrize(
    ("raw", "region", "expected"),
    [
        ("+1 (212) 555-0100", None, "+12125550100"),
        ("(212) 555-0100", "US", "+12125550100"),
        ("+44 07911 123456", None, "+447911123456"),  # the national prefix after the code
        ("+390612345678", None, "+390612345678"),  # a leading zero that belongs to the number
        # Other scripts' digits: stored as ASCII ones.
        ("+1" + _digits_of("2125550100", ARABIC_INDIC_ZERO), None, "+12125550100"),
        ("+1" + _digits_of("2125550100", FULLWIDTH_ZERO), None, "+12125550100"),
    ],
)
def test_other_writings_still_go_through_parsing(raw: str, region: str | None, expected: str):
    assert normalize_e164(raw, region) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "+1212555010",
        "+0",
        "12125550100",
        "+999123",
        "+1212555010a",
        "+1" + _digits_of("02125550100", ARABIC_INDIC_ZERO),  # a zero in another script
    ],
)
def test_invalid_numbers_are_refused(raw: str):
    with pytest.raises(InvalidPhoneNumber):
        normalize_e164(raw)
