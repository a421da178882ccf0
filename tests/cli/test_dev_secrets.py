"""The dev stack's secrets key: the shell's when set, else one made once in its state
directory and kept there, so its connections stay readable from one start to the next."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from cli.stack.dev_secrets import DEV_SECRETS_KEY_FILE, SECRETS_KEY_VARIABLE, dev_secrets_key


def test_the_dev_stack_makes_its_key_once_and_keeps_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(SECRETS_KEY_VARIABLE, raising=False)
    key = dev_secrets_key(tmp_path / "state")
    Fernet(key.encode())  # a usable key
    key_file = tmp_path / "state" / DEV_SECRETS_KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert dev_secrets_key(tmp_path / "state") == key
    assert dev_secrets_key(tmp_path / "elsewhere") != key


def test_the_shells_key_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    configured = Fernet.generate_key().decode()
    monkeypatch.setenv(SECRETS_KEY_VARIABLE, configured)
    assert dev_secrets_key(tmp_path) == configured
    assert not (tmp_path / DEV_SECRETS_KEY_FILE).exists()
