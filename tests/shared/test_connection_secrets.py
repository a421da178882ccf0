"""Connection secrets at rest: Fernet under SWITCHBOARD_SECRETS_KEY, several keys for rotation,
and clear errors naming the setting when it is missing or wrong."""

from __future__ import annotations

import pytest
from cryptography.fernet import Fernet

from shared.connections.secrets import (
    SecretsUnavailable,
    decrypt_secrets,
    encrypt_secrets,
    new_key,
    rotate_token,
)
from shared.settings import Settings

SECRETS = {"auth_token": "s3cret-token", "username": "ü-user"}


def keyed(*keys: str) -> Settings:
    return Settings(secrets_key=",".join(keys))


def test_secrets_round_trip_and_are_not_readable_at_rest():
    settings = keyed(new_key())
    token = encrypt_secrets(SECRETS, settings)
    assert "s3cret-token" not in token
    assert decrypt_secrets(token, settings) == SECRETS


def test_the_first_key_encrypts_and_every_key_decrypts():
    old, new = new_key(), new_key()
    under_old = encrypt_secrets(SECRETS, keyed(old))
    both = keyed(new, old)
    assert decrypt_secrets(under_old, both) == SECRETS
    rotated = rotate_token(under_old, both)
    # Rotated under the new key: readable once the old key is dropped, not with the old alone.
    assert decrypt_secrets(rotated, keyed(new)) == SECRETS
    assert Fernet(new.encode()).decrypt(rotated.encode())
    with pytest.raises(SecretsUnavailable) as refused:
        decrypt_secrets(rotated, keyed(old))
    assert refused.value.items[0].type == "secrets_key_mismatch"


@pytest.mark.parametrize("value", ["", " , "])
def test_without_a_key_nothing_is_encrypted_and_the_error_names_the_setting(value: str):
    with pytest.raises(SecretsUnavailable) as missing:
        encrypt_secrets(SECRETS, Settings(secrets_key=value))
    error = missing.value
    assert error.status_code == 503
    assert error.detail() == [
        {
            "loc": ["settings", "SWITCHBOARD_SECRETS_KEY"],
            "msg": "SWITCHBOARD_SECRETS_KEY is not set: provider connections cannot be stored "
            "or read (README, Provider connections)",
            "type": "secrets_key_missing",
        }
    ]


def test_a_key_that_is_not_a_fernet_key_is_named_by_its_position():
    with pytest.raises(SecretsUnavailable) as invalid:
        encrypt_secrets(SECRETS, keyed(new_key(), "not-a-key"))
    item = invalid.value.items[0]
    assert item.type == "secrets_key_invalid"
    assert item.msg.startswith("SWITCHBOARD_SECRETS_KEY: key 2 is not a Fernet key")
