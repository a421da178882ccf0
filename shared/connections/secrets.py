"""Connection secrets at rest: Fernet tokens under ``SWITCHBOARD_SECRETS_KEY``.

The setting holds one or more Fernet keys, comma-separated: the first encrypts, every one
decrypts (``MultiFernet``), so a key is rotated by putting the new one first, re-encrypting
(``switchboard secrets rotate``), then dropping the old one. There is no built-in key: without
the setting, no connection can be stored or read.
"""

from __future__ import annotations

import json
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from shared.errors import ErrorItem, SwitchboardError
from shared.settings import Settings, get_settings

SETTING = "SWITCHBOARD_SECRETS_KEY"


class SecretsUnavailable(SwitchboardError):
    """The secrets key is missing or unusable: connections can be neither stored nor read
    (503, naming the setting)."""

    def __init__(self, msg: str, type_: str = "secrets_key_missing") -> None:
        super().__init__(items=[ErrorItem(["settings", SETTING], msg, type_)], status_code=503)


def new_key() -> str:
    """A fresh Fernet key, for ``SWITCHBOARD_SECRETS_KEY``."""
    return Fernet.generate_key().decode()


@lru_cache(maxsize=4)
def _cipher(keys: str) -> MultiFernet:
    parts = [part.strip() for part in keys.split(",") if part.strip()]
    if not parts:
        raise SecretsUnavailable(
            f"{SETTING} is not set: provider connections cannot be stored or read "
            "(README, Provider connections)"
        )
    fernets = []
    for index, part in enumerate(parts, start=1):
        try:
            fernets.append(Fernet(part.encode()))
        except ValueError as exc:
            raise SecretsUnavailable(
                f"{SETTING}: key {index} is not a Fernet key (32 url-safe base64-encoded bytes)",
                "secrets_key_invalid",
            ) from exc
    return MultiFernet(fernets)


def cipher(settings: Settings | None = None) -> MultiFernet:
    """The ``MultiFernet`` of the configured keys; ``SecretsUnavailable`` without a usable
    one."""
    return _cipher((settings or get_settings()).secrets_key)


def encrypt_secrets(secrets: dict[str, str], settings: Settings | None = None) -> str:
    """The Fernet token of ``secrets`` (a JSON object), under the first key."""
    payload = json.dumps(secrets, sort_keys=True, separators=(",", ":")).encode()
    return cipher(settings).encrypt(payload).decode()


def decrypt_secrets(token: str, settings: Settings | None = None) -> dict[str, str]:
    """The secrets a token holds; ``SecretsUnavailable`` when no configured key opens it."""
    try:
        payload = cipher(settings).decrypt(token.encode())
    except InvalidToken as exc:
        raise SecretsUnavailable(
            f"no key of {SETTING} decrypts a stored connection (a key was dropped before "
            "`switchboard secrets rotate` re-encrypted everything under the new one?)",
            "secrets_key_mismatch",
        ) from exc
    secrets = json.loads(payload)
    return {str(name): str(value) for name, value in secrets.items()}


def rotate_token(token: str, settings: Settings | None = None) -> str:
    """``token`` re-encrypted under the first key (``MultiFernet.rotate``)."""
    try:
        return cipher(settings).rotate(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretsUnavailable(
            f"no key of {SETTING} decrypts a stored connection", "secrets_key_mismatch"
        ) from exc
