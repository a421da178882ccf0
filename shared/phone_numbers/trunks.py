"""A ``sip_trunk`` number's outbound trunk: stored as a provider connection of its workspace
(the address as its account id; transport, media encryption and headers as its settings; the
credentials encrypted), which the number names in ``credentials_ref``; and shown back without
its credentials."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from shared.connections import DEFAULT_REF
from shared.connections.service import create_connection
from shared.errors import ValidationFailed
from shared.models import PhoneNumber, ProviderConnection
from shared.phone_numbers import repository as numbers_repo
from shared.schemas.trunks import OutboundTrunkConfig, OutboundTrunkConfigResponse

SIP_TRUNK = "sip_trunk"
TRUNK_LOC = ("body", "outbound_trunk_config")
# Whether the trunk has credentials, kept beside its settings: the secrets are never read to
# answer a request.
HAS_AUTH_CREDENTIALS = "has_auth_credentials"


def check_trunk_fields(
    provider: str, credentials_ref: str, config: OutboundTrunkConfig | None
) -> None:
    """422 naming the field: a ``sip_trunk`` number needs its trunk (or names a trunk
    connection of the workspace in ``credentials_ref``), no other number has one, and SRTP
    needs TLS signalling."""
    if provider != SIP_TRUNK:
        if config is not None:
            raise ValidationFailed.one(
                list(TRUNK_LOC), f"only a sip_trunk number has an outbound trunk, not {provider}"
            )
        return
    if config is None:
        if credentials_ref == DEFAULT_REF:
            raise ValidationFailed.one(
                list(TRUNK_LOC), "a sip_trunk number needs its outbound_trunk_config", "missing"
            )
        return
    if credentials_ref != DEFAULT_REF:
        raise ValidationFailed.one(
            ["body", "credentials_ref"],
            "a sip_trunk number with an outbound_trunk_config gets its trunk's connection: "
            "leave credentials_ref out",
        )
    if config.media_encryption == "required" and config.transport in ("udp", "tcp"):
        raise ValidationFailed.one(
            [*TRUNK_LOC, "media_encryption"],
            "required media encryption (SRTP) needs TLS signalling: transport tls or auto",
        )


def store_trunk(
    session: Session, workspace_id: str, number_id: str, e164: str, config: OutboundTrunkConfig
) -> str:
    """Store the number's trunk as a provider connection; its id (the number's
    ``credentials_ref``)."""
    credentials = config.credentials
    secrets = (
        {"username": credentials.username, "password": credentials.password}
        if credentials is not None
        else {}
    )
    connection = create_connection(
        session,
        workspace_id,
        SIP_TRUNK,
        f"SIP trunk of {e164} ({number_id})",
        config.address,
        secrets,
        {
            "transport": config.transport,
            "media_encryption": config.media_encryption,
            "headers": dict(config.headers),
            HAS_AUTH_CREDENTIALS: credentials is not None,
        },
        loc=TRUNK_LOC,
    )
    return connection.id


def trunk_view(connection: ProviderConnection) -> OutboundTrunkConfigResponse:
    """The trunk as the API shows it: no credentials, only whether it has any."""
    config = connection.config
    return OutboundTrunkConfigResponse(
        address=connection.account_id,
        transport=config.get("transport", "auto"),
        media_encryption=config.get("media_encryption", "allowed"),
        headers=dict(config.get("headers") or {}),
        has_auth_credentials=bool(config.get(HAS_AUTH_CREDENTIALS)),
    )


def trunks_of(
    session: Session, workspace_id: str, numbers: Sequence[PhoneNumber]
) -> dict[str, OutboundTrunkConfigResponse]:
    """The trunks of the ``sip_trunk`` numbers among ``numbers``, by number id (one query)."""
    refs = {n.id: n.credentials_ref for n in numbers if n.provider == SIP_TRUNK}
    connections = numbers_repo.connections_by_id(session, workspace_id, set(refs.values()))
    return {
        number_id: trunk_view(connections[ref])
        for number_id, ref in refs.items()
        if ref in connections
    }
