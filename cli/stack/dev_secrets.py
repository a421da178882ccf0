"""The development secrets key of the dev stack (``make run``, ``make demo``): kept in its
state directory, so the provider connections stored in its database stay readable from one
start to the next. Only the dev stack makes one; production never invents a key."""

from __future__ import annotations

import os
from pathlib import Path

SECRETS_KEY_VARIABLE = "SWITCHBOARD_SECRETS_KEY"
DEV_SECRETS_KEY_FILE = "secrets.key"


def dev_secrets_key(state_dir: Path) -> str:
    """``SWITCHBOARD_SECRETS_KEY`` from the shell when set, else the state directory's
    development key (made on first use, readable by its owner only)."""
    configured = os.environ.get(SECRETS_KEY_VARIABLE, "").strip()
    if configured:
        return configured
    from shared.connections.secrets import new_key

    path = state_dir / DEV_SECRETS_KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another start made it meanwhile
            return path.read_text().strip()
        with os.fdopen(descriptor, "w") as key_file:
            key_file.write(new_key() + "\n")
    return path.read_text().strip()
