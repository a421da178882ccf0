"""The resend rule every adapter's REST calls follow (``shared.telephony.resend``): what is
counted as a failed provider request."""

from __future__ import annotations

import pytest

from shared import metrics
from shared.errors import ProviderError
from shared.telephony.resend import send_resending

NOT_FOUND = ProviderError("vobiz 404: no such call", status=404)


def _counted() -> float:
    return float(metrics.PROVIDER_ERRORS.labels(code="http_404")._value.get())


def _not_found() -> None:
    raise RuntimeError("404 from the SDK")


def test_a_lookup_answered_not_found_is_raised_at_once_and_not_counted_as_a_failure():
    before = _counted()
    with pytest.raises(ProviderError) as raised:
        send_resending(_not_found, lambda _exc: NOT_FOUND, answers=frozenset({404}))
    assert raised.value is NOT_FOUND
    assert _counted() == before


def test_the_same_answer_to_a_request_that_expects_none_is_a_counted_failure():
    before = _counted()
    with pytest.raises(ProviderError):
        send_resending(_not_found, lambda _exc: NOT_FOUND)
    assert _counted() == before + 1
