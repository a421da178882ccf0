"""The providers the dispatcher can dial through: each is a folder on the port
(``shared/telephony/port.py``), registered here and nowhere else."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.connections import DEFAULT_REF
from shared.errors import ProviderError
from shared.lifecycle.plans import ProviderUpdate
from shared.telephony import sip_trunk, twilio, vobiz
from shared.telephony.port import Callbacks, Provider


@dataclass(frozen=True)
class Adapter:
    """One provider's adapter: its accounts, and its side of the callback endpoints."""

    provider_for: Callable[[str], Provider]  # by a caller number's credentials_ref
    callbacks: Callbacks


ADAPTERS: dict[str, Adapter] = {
    twilio.NAME: Adapter(provider_for=twilio.provider_for, callbacks=twilio.CALLBACKS),
    sip_trunk.NAME: Adapter(provider_for=sip_trunk.provider_for, callbacks=sip_trunk.CALLBACKS),
    vobiz.NAME: Adapter(provider_for=vobiz.provider_for, callbacks=vobiz.CALLBACKS),
}
# Phone numbers stored before they named a provider are Twilio's.
DEFAULT_PROVIDER = twilio.NAME


def _adapter(provider_name: str | None) -> Adapter:
    adapter = ADAPTERS.get(provider_name or DEFAULT_PROVIDER)
    if adapter is None:
        raise ProviderError(f"no adapter for provider {provider_name!r}")
    return adapter


def provider_for(provider_name: str | None, credentials_ref: str | None) -> Provider:
    """The process-wide account of ``provider_name`` that a caller number's ``credentials_ref``
    names (thread-safe; one per account)."""
    return _adapter(provider_name).provider_for(credentials_ref or "default")


def account_key(provider_name: str | None, credentials_ref: str | None) -> str | None:
    """The account a caller number dials through, as its provider paces it (``pacing_key``),
    without opening its secrets (a release or a rebuild of live-call slots must not fail on
    them): a connection's id, which is the ``credentials_ref`` naming it, or the environment
    account's key. None with no number."""
    if provider_name is None and credentials_ref is None:
        return None
    if credentials_ref and credentials_ref != DEFAULT_REF:
        return credentials_ref
    try:
        return provider_for(provider_name, DEFAULT_REF).pacing_key
    except ProviderError:  # no environment account of this provider: one key for it all the same
        return f"{provider_name or DEFAULT_PROVIDER}:{DEFAULT_REF}"


def callbacks_for(provider_name: str) -> Callbacks:
    """The provider's side of the callback endpoints."""
    return _adapter(provider_name).callbacks


def legacy_status_update(report: dict[str, Any]) -> ProviderUpdate | None:
    """A status report queued before the provider port, in the provider's own fields (Twilio
    was the only provider then): see ``shared.telephony.reports``."""
    return twilio.from_twilio_report(report)
