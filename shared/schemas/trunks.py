"""A SIP trunk phone number's ``outbound_trunk_config`` (the ElevenLabs phone-numbers shape):
where its calls go, how, as whom and with which custom headers. The credentials are
write-only: the response says only whether there are any."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from pydantic_core import PydanticCustomError

from shared.storable import Text

SipTransport = Literal["auto", "udp", "tcp", "tls"]
MediaEncryption = Literal["disabled", "allowed", "required"]

# host[:port]: a DNS name (labels of letters, digits and inner hyphens) or an IPv4 address, or
# an IPv6 address in brackets; the port 1-65535.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = rf"(?:\[[0-9A-Fa-f:.]{{2,45}}\]|{_LABEL}(?:\.{_LABEL})*)"
ADDRESS = re.compile(rf"(?P<host>{_HOST})(?::(?P<port>[0-9]{{1,5}}))?")
MAX_ADDRESS_CHARS = 253
# Custom headers go in the INVITE as URI headers: X- names of letters, digits and hyphens,
# values of printable characters. Twilio takes under 1,024 characters of headers in all, and
# writes its own X-Twilio-* headers.
HEADER_NAME = re.compile(r"X-[A-Za-z0-9][A-Za-z0-9-]*")
MAX_HEADERS = 16
MAX_HEADER_NAME_CHARS = 64
MAX_HEADER_VALUE_CHARS = 256
MAX_HEADERS_TOTAL_CHARS = 1_000
MAX_CREDENTIAL_CHARS = 128


def _printable(value: str, what: str) -> str:
    """Refuse control characters (CR and LF above all: they would start a new SIP header)."""
    if any(ord(character) < 32 or ord(character) == 127 for character in value):
        raise PydanticCustomError(
            "value_error.control_character",
            f"{what} may not contain control characters (CR, LF, ...)",
        )
    return value


def _address(value: str) -> str:
    match = ADDRESS.fullmatch(value)
    if match is None:
        raise PydanticCustomError(
            "value_error.address",
            "a SIP trunk address is host[:port]: a host name, an IPv4 address or an [IPv6] "
            "address, without a scheme, user or path",
        )
    port = match.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        raise PydanticCustomError("value_error.address", "the port must be 1 to 65535")
    return value


def _header_name(value: str) -> str:
    if not HEADER_NAME.fullmatch(value) or len(value) > MAX_HEADER_NAME_CHARS:
        raise PydanticCustomError(
            "value_error.header_name",
            f"a custom header is named X-... with letters, digits and hyphens only, at most "
            f"{MAX_HEADER_NAME_CHARS} characters",
        )
    if value.lower().startswith("x-twilio-"):
        raise PydanticCustomError(
            "value_error.header_name", "X-Twilio-* headers are written by the originating carrier"
        )
    return value


def _header_value(value: str) -> str:
    return _printable(value, "a header value")


HeaderName = Annotated[Text, AfterValidator(_header_name)]
HeaderValue = Annotated[
    Text, Field(max_length=MAX_HEADER_VALUE_CHARS), AfterValidator(_header_value)
]


class TrunkCredentials(BaseModel):
    """The trunk's digest credentials: write-only."""

    model_config = ConfigDict(extra="forbid")

    username: Text = Field(min_length=1, max_length=MAX_CREDENTIAL_CHARS)
    password: Text = Field(min_length=1, max_length=MAX_CREDENTIAL_CHARS)

    @field_validator("username", "password")
    @classmethod
    def _no_control_characters(cls, value: str) -> str:
        return _printable(value, "a credential")


class OutboundTrunkConfig(BaseModel):
    """Where a ``sip_trunk`` number's calls go: ``sip:<E.164>@<address>``."""

    model_config = ConfigDict(extra="forbid")

    address: Annotated[Text, Field(min_length=1, max_length=MAX_ADDRESS_CHARS)] = Field(
        description="The trunk's host[:port], e.g. sip.example.com:5061."
    )
    transport: SipTransport = Field(
        default="auto", description="SIP signalling transport; auto lets the carrier choose."
    )
    media_encryption: MediaEncryption = Field(
        default="allowed",
        description="SRTP: required needs TLS signalling (transport tls or auto); allowed and "
        "disabled send RTP.",
    )
    credentials: TrunkCredentials | None = Field(
        default=None, description="Digest credentials (write-only: never returned)."
    )
    headers: dict[HeaderName, HeaderValue] = Field(
        default_factory=dict,
        max_length=MAX_HEADERS,
        description=f"Custom X- headers sent in the INVITE (at most {MAX_HEADERS}, "
        f"{MAX_HEADERS_TOTAL_CHARS} characters of names and values together).",
    )

    @field_validator("address")
    @classmethod
    def _address_shape(cls, value: str) -> str:
        return _address(value)

    @field_validator("headers")
    @classmethod
    def _headers_size(cls, value: dict[str, str]) -> dict[str, str]:
        if sum(len(name) + len(text) for name, text in value.items()) > MAX_HEADERS_TOTAL_CHARS:
            raise PydanticCustomError(
                "value_error.headers_too_long",
                f"custom headers may hold at most {MAX_HEADERS_TOTAL_CHARS} characters of "
                "names and values together",
            )
        return value


class OutboundTrunkConfigResponse(BaseModel):
    """A trunk as the API shows it: everything but the credentials."""

    address: str
    transport: SipTransport
    media_encryption: MediaEncryption
    headers: dict[str, str]
    has_auth_credentials: bool
