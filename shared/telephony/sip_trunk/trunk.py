"""A SIP trunk as the adapter dials it: a provider connection read back into its parts, and
the SIP URI Twilio is given for a call to one number over it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

# The trunk's settings in the connection's ``config`` (never secret) and ``secrets``.
TRANSPORT = "transport"
MEDIA_ENCRYPTION = "media_encryption"
HEADERS = "headers"
USERNAME = "username"
PASSWORD = "password"

TRANSPORT_AUTO = "auto"
MEDIA_REQUIRED = "required"


@dataclass(frozen=True)
class Trunk:
    """One outbound trunk: where INVITEs go, how, as whom, with which custom headers. The
    credentials are never part of its ``repr`` (a log line that shows a trunk shows none)."""

    connection_id: str
    address: str  # host[:port]
    transport: str = TRANSPORT_AUTO  # auto, udp, tcp, tls
    media_encryption: str = "disabled"  # disabled, allowed, required
    headers: tuple[tuple[str, str], ...] = ()
    username: str = field(default="", repr=False)
    password: str = field(default="", repr=False)

    @classmethod
    def of_connection(
        cls, connection_id: str, address: str, config: Mapping[str, Any], secrets: Mapping[str, str]
    ) -> Trunk:
        """The trunk a stored provider connection describes."""
        headers = config.get(HEADERS) or {}
        return cls(
            connection_id=connection_id,
            address=address,
            transport=str(config.get(TRANSPORT) or TRANSPORT_AUTO),
            media_encryption=str(config.get(MEDIA_ENCRYPTION) or "disabled"),
            headers=tuple(sorted((str(k), str(v)) for k, v in headers.items())),
            username=secrets.get(USERNAME, ""),
            password=secrets.get(PASSWORD, ""),
        )

    def uri(self, number: str) -> str:
        """``sip:<number>@<address>``, with ``;transport=`` unless auto, ``;secure=true`` when
        media encryption is required (Twilio then signals over TLS and sends SRTP), and the
        custom headers as URI headers (``?X-Name=value&...``), which Twilio puts in the INVITE."""
        uri = f"sip:{number}@{self.address}"
        if self.transport != TRANSPORT_AUTO:
            uri += f";transport={self.transport}"
        if self.media_encryption == MEDIA_REQUIRED:
            uri += ";secure=true"
        if self.headers:
            uri += "?" + "&".join(
                f"{quote(name, safe='-')}={quote(value, safe='')}" for name, value in self.headers
            )
        return uri

    def reaches(self, number: str) -> Callable[[str], bool]:
        """Whether a call's recorded ``to`` is ``number`` on this trunk: the URI's user and
        host (and port, when both name one), whatever parameters or headers it kept."""
        user, host, port = _destination(self.uri(number))

        def match(recorded: str) -> bool:
            other = _destination(recorded)
            return (other[0], other[1]) == (user, host) and (
                other[2] is None or port is None or other[2] == port
            )

        return match

    def auth(self) -> dict[str, str]:
        """The SDK's ``calls.create`` arguments for the trunk's digest credentials (none when the
        trunk takes calls without them)."""
        if not self.username:
            return {}
        return {"sip_auth_username": self.username, "sip_auth_password": self.password}


def _destination(uri: str) -> tuple[str, str, str | None]:
    """A SIP URI's user, lower-case host and port (None when it names none)."""
    target = uri.split(":", 1)[-1].split("?", 1)[0].split(";", 1)[0]
    user, _, hostport = target.rpartition("@")
    if hostport.startswith("["):  # [IPv6]:port
        host, _, rest = hostport.partition("]")
        host += "]"
        port = rest[1:] if rest.startswith(":") else None
    else:
        host, _, port_text = hostport.partition(":")
        port = port_text or None
    return user, host.lower(), port
