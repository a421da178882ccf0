"""The account a caller number's live-call slots are held under (``registry.account_key``):
its provider's pacing key, named without opening any secrets."""

from __future__ import annotations

import pytest

from shared.settings import get_settings
from shared.telephony import registry


@pytest.fixture
def development(monkeypatch: pytest.MonkeyPatch) -> None:
    """Development mode: the environment accounts are the sandbox carrier's."""
    monkeypatch.setattr(get_settings(), "env", "dev")


@pytest.mark.parametrize("provider", ["twilio", "vobiz"])
def test_the_environment_account_is_keyed_as_its_provider_paces_it(provider, development):
    expected = registry.provider_for(provider, "default").pacing_key
    assert registry.account_key(provider, "default") == expected
    # A number stored before credentials_ref existed is on the environment's account too.
    assert registry.account_key(provider, None) == expected


def test_a_connection_is_keyed_by_its_id_without_being_read():
    # No such connection exists: its id is its key all the same (a release never fails).
    for provider in ("twilio", "vobiz", "sip_trunk"):
        assert registry.account_key(provider, "conn_missing") == "conn_missing"


def test_no_number_has_no_account_and_a_provider_without_one_a_key_of_its_own():
    assert registry.account_key(None, None) is None
    assert registry.account_key("sip_trunk", "default") == "sip_trunk:default"


def test_production_without_a_vobiz_account_keys_its_numbers_all_the_same(monkeypatch):
    monkeypatch.setattr(get_settings(), "env", "production")
    monkeypatch.setattr(get_settings(), "vobiz_auth_id", "")
    assert registry.account_key("vobiz", "default") == "vobiz:default"


def test_numbers_without_a_provider_are_twilio_numbers(development):
    # Phone numbers stored before they named a provider are Twilio's.
    assert registry.account_key(None, "default") == registry.account_key("twilio", "default")
