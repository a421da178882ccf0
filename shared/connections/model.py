"""What a provider adapter knows of a workspace's account: the ``Connection`` (its secrets
decrypted) and why one cannot be used. No SQL here: the adapters import it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from shared.errors import ProviderError

# A phone number's credentials_ref for the environment's account of its provider.
DEFAULT_REF = "default"


@dataclass(frozen=True)
class Connection:
    """A workspace's account at a provider, its secrets decrypted."""

    id: str
    workspace_id: str
    provider: str
    account_id: str
    secrets: dict[str, str]
    config: dict[str, Any]
    updated_at: datetime

    def credentials(self, provider: str, display_name: str) -> tuple[str, str]:
        """(account id, auth token) of this connection, when it is an account of ``provider``;
        else ConnectionUnavailable (``auth_failed``: no call of a number naming it can be
        placed)."""
        if self.provider != provider:
            raise ConnectionUnavailable(
                f"provider connection {self.id} is a {self.provider} account, not {display_name}'s",
                auth_failed=True,
            )
        return self.account_id, self.secrets.get("auth_token", "")


class ConnectionUnavailable(ProviderError):
    """A number's connection cannot be used: gone (``auth_failed``: no call of it can be
    placed), or its secrets cannot be read here (the secrets key: ``retryable``, as for a
    provider that cannot be reached, until the setting is fixed)."""
