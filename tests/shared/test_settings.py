"""Settings whose defaults follow the provider's documented behaviour."""

from __future__ import annotations

import pytest

from shared.settings import Settings


def test_an_account_dials_one_call_per_second_by_default_as_twilio_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SWITCHBOARD_CALLS_PER_SECOND_PER_ACCOUNT", raising=False)
    monkeypatch.delenv("SWITCHBOARD_CALLS_PER_SECOND_PER_NUMBER", raising=False)
    settings = Settings()
    assert settings.calls_per_second_per_account == 1.0
    assert settings.per_number_pacing is None


def test_the_account_pace_is_raised_to_what_the_account_bought(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SWITCHBOARD_CALLS_PER_SECOND_PER_ACCOUNT", "30")
    assert Settings().calls_per_second_per_account == 30.0


@pytest.mark.parametrize(("value", "pace"), [("", None), ("0", None), ("2.5", 2.5)])
def test_caller_numbers_are_paced_only_when_asked(
    monkeypatch: pytest.MonkeyPatch, value: str, pace: float | None
) -> None:
    monkeypatch.setenv("SWITCHBOARD_CALLS_PER_SECOND_PER_NUMBER", value)
    assert Settings().per_number_pacing == pace
