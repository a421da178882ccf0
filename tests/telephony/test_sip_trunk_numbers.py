"""A sip_trunk phone number's outbound_trunk_config through the API: each bad field is a 422
naming it, the trunk is stored as a provider connection the number names, and its credentials
are never returned."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from elevenlabs import ElevenLabs
from elevenlabs.conversational_ai.phone_numbers.types import (
    PhoneNumbersCreateRequestBody_SipTrunk,
)
from elevenlabs.types import OutboundSipTrunkConfigRequestModel, SipTrunkCredentialsRequestModel

from tests.support import Stack

TRUNK: dict[str, Any] = {
    "address": "sip.trunk.example:5061",
    "transport": "tls",
    "media_encryption": "required",
    "credentials": {"username": "acme-trunk-user", "password": "Pa55-word-never-shown"},
    "headers": {"X-Campaign": "spring", "X-Tenant-Id": "acme"},
}
NUMBER = "+12025550177"


def register(client: httpx.Client, **body: Any) -> httpx.Response:
    return client.post(
        "/v1/voiceai/phone-numbers",
        json={"phone_number": NUMBER, "provider": "sip_trunk", "outbound_trunk_config": TRUNK}
        | body,
    )


def trunk_with(**fields: Any) -> dict[str, Any]:
    return TRUNK | fields


def test_a_trunk_is_stored_as_a_connection_and_shown_without_its_credentials(
    client: httpx.Client, stack: Stack
):
    response = register(client)
    assert response.status_code == 201, response.text
    number = response.json()
    assert number["outbound_trunk_config"] == {
        "address": "sip.trunk.example:5061",
        "transport": "tls",
        "media_encryption": "required",
        "headers": {"X-Campaign": "spring", "X-Tenant-Id": "acme"},
        "has_auth_credentials": True,
    }
    listed = client.get("/v1/voiceai/phone-numbers")
    assert listed.status_code == 200
    [shown] = [n for n in listed.json() if n["phone_number_id"] == number["phone_number_id"]]
    assert shown == number
    for text in (response.text, listed.text):
        assert "acme-trunk-user" not in text and "Pa55-word-never-shown" not in text
    # The number names its trunk's connection; the secrets are encrypted at rest.
    ((provider, account_id, secret, config),) = stack.sql(
        "SELECT provider, account_id, secret, config FROM provider_connections WHERE id = %s",
        number["credentials_ref"],
    )
    assert (provider, account_id) == ("sip_trunk", "sip.trunk.example:5061")
    assert "Pa55-word-never-shown" not in secret and "acme-trunk-user" not in secret
    assert config["transport"] == "tls" and config["headers"]["X-Tenant-Id"] == "acme"


def test_a_trunk_without_credentials_or_headers_takes_the_defaults(client: httpx.Client):
    response = register(client, outbound_trunk_config={"address": "10.1.2.3"})
    assert response.status_code == 201, response.text
    assert response.json()["outbound_trunk_config"] == {
        "address": "10.1.2.3",
        "transport": "auto",
        "media_encryption": "allowed",
        "headers": {},
        "has_auth_credentials": False,
    }


BAD_FIELDS = [
    # (the trunk config, the loc under outbound_trunk_config that must be named)
    (trunk_with(address="sip:user@host"), ["address"]),
    (trunk_with(address="host.example:70000"), ["address"]),
    (trunk_with(address="host with space"), ["address"]),
    (trunk_with(address=""), ["address"]),
    (trunk_with(address="a" * 254), ["address"]),
    ({k: v for k, v in TRUNK.items() if k != "address"}, ["address"]),
    (trunk_with(transport="sctp"), ["transport"]),
    (trunk_with(media_encryption="sometimes"), ["media_encryption"]),
    (trunk_with(transport="udp", media_encryption="required"), ["media_encryption"]),
    (trunk_with(credentials={"username": "u"}), ["credentials", "password"]),
    (trunk_with(credentials={"username": "", "password": "p"}), ["credentials", "username"]),
    (
        trunk_with(credentials={"username": "u\r\nX-Evil: 1", "password": "p"}),
        ["credentials", "username"],
    ),
    (trunk_with(credentials={"username": "u", "password": "p" * 129}), ["credentials", "password"]),
    (
        trunk_with(credentials={"username": "u", "password": "p", "realm": "r"}),
        ["credentials", "realm"],
    ),
    (trunk_with(headers={"Campaign": "x"}), ["headers", "Campaign", "[key]"]),
    (trunk_with(headers={"X-Bad Name": "x"}), ["headers", "X-Bad Name", "[key]"]),
    (trunk_with(headers={"X-Twilio-CallSid": "x"}), ["headers", "X-Twilio-CallSid", "[key]"]),
    (trunk_with(headers={"X-" + "a" * 70: "x"}), ["headers", "X-" + "a" * 70, "[key]"]),
    (trunk_with(headers={"X-Ok": "line\r\nInjected: yes"}), ["headers", "X-Ok"]),
    (trunk_with(headers={"X-Ok": "v" * 257}), ["headers", "X-Ok"]),
    (trunk_with(headers={"X-Ok": 5}), ["headers", "X-Ok"]),
    (trunk_with(headers={f"X-H{i}": "v" for i in range(17)}), ["headers"]),
    (trunk_with(headers={f"X-Header-{i}": "v" * 200 for i in range(6)}), ["headers"]),
    (trunk_with(secure=True), ["secure"]),
]


@pytest.mark.parametrize(("trunk", "loc"), BAD_FIELDS)
def test_each_bad_field_is_a_422_naming_it(
    client: httpx.Client, stack: Stack, trunk: dict[str, Any], loc: list[str]
):
    response = register(client, outbound_trunk_config=trunk)
    assert response.status_code == 422, response.text
    locs = [item["loc"] for item in response.json()["detail"]]
    assert ["body", "outbound_trunk_config", *loc] in locs, locs
    # Nothing was stored, and nothing secret is echoed.
    assert client.get("/v1/voiceai/phone-numbers").json() == []
    assert "Pa55-word-never-shown" not in response.text


def test_a_trunk_belongs_to_sip_trunk_numbers_only(client: httpx.Client):
    missing = register(client, outbound_trunk_config=None)
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["body", "outbound_trunk_config"]
    foreign = register(client, provider="twilio")
    assert foreign.status_code == 422
    assert foreign.json()["detail"][0]["loc"] == ["body", "outbound_trunk_config"]
    both = register(client, credentials_ref="conn_x")
    assert both.status_code == 422
    assert both.json()["detail"][0]["loc"] == ["body", "credentials_ref"]
    assert client.get("/v1/voiceai/phone-numbers").json() == []


def test_a_second_number_on_the_same_trunk_names_its_connection(client: httpx.Client):
    first = register(client).json()
    second = client.post(
        "/v1/voiceai/phone-numbers",
        json={
            "phone_number": "+12025550178",
            "provider": "sip_trunk",
            "credentials_ref": first["credentials_ref"],
        },
    )
    assert second.status_code == 201, second.text
    assert second.json()["outbound_trunk_config"] == first["outbound_trunk_config"]


def test_the_elevenlabs_sdk_registers_a_sip_trunk_number(
    stack: Stack, api_key: str, client: httpx.Client
):
    sdk = ElevenLabs(api_key=api_key, base_url=stack.api_url, timeout=60)
    created = sdk.conversational_ai.phone_numbers.create(
        request=PhoneNumbersCreateRequestBody_SipTrunk(
            phone_number="+12025550179",
            label="sdk trunk",
            outbound_trunk_config=OutboundSipTrunkConfigRequestModel(
                address="sip.trunk.example:5061",
                transport="tls",
                media_encryption="required",
                headers={"X-Campaign": "spring"},
                credentials=SipTrunkCredentialsRequestModel(
                    username="acme-trunk-user", password="Pa55-word-never-shown"
                ),
            ),
        )
    )
    [shown] = client.get("/v1/convai/phone-numbers").json()
    assert shown["phone_number_id"] == created.phone_number_id
    assert shown["provider"] == "sip_trunk" and shown["label"] == "sdk trunk"
    assert shown["outbound_trunk_config"] == {
        "address": "sip.trunk.example:5061",
        "transport": "tls",
        "media_encryption": "required",
        "headers": {"X-Campaign": "spring"},
        "has_auth_credentials": True,
    }
