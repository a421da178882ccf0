"""The demo over a SIP trunk (``make demo PROVIDER=sip_trunk``): a sandbox trunk the carrier
checks every INVITE against, and a ``sip_trunk`` caller number whose outbound trunk it is."""

from __future__ import annotations

from typing import Any

from cli.stack.net import ApiClient, ApiError

TRUNK_ADDRESS = "trunk.demo.sandbox:5061"
TRUNK_USERNAME = "demo-trunk"
# A development value for the sandbox's own trunk, like the sandbox account's token.
TRUNK_PASSWORD = "demo-trunk-password"
# The demo's trunk caller numbers: +12025550142, then the next free one.
CALLER_PREFIX = "+1202555"
FIRST_SUFFIX = 142
OUTBOUND_TRUNK_CONFIG: dict[str, Any] = {
    "address": TRUNK_ADDRESS,
    "transport": "tls",
    "media_encryption": "required",
    "credentials": {"username": TRUNK_USERNAME, "password": TRUNK_PASSWORD},
    "headers": {"X-Demo": "switchboard"},
}
# What the sandbox carrier expects of the trunk's INVITEs (``sandbox.sip``).
SANDBOX_TRUNKS = {
    TRUNK_ADDRESS: {"username": TRUNK_USERNAME, "password": TRUNK_PASSWORD, "transport": "tls"}
}


def trunk_caller_number(client: ApiClient) -> str:
    """A new ``sip_trunk`` caller number over the demo trunk; its id. A new one each run: its
    trunk's credentials are encrypted under this run's secrets key, and a number an earlier run
    stored in the same database (``DATABASE_URL``) may be under a key that is gone."""
    for suffix in range(FIRST_SUFFIX, FIRST_SUFFIX + 1000):
        try:
            registered = client.post(
                "/v1/voiceai/phone-numbers",
                {
                    "phone_number": f"{CALLER_PREFIX}{suffix:04d}",
                    "provider": "sip_trunk",
                    "label": "demo SIP trunk",
                    "outbound_trunk_config": OUTBOUND_TRUNK_CONFIG,
                },
            )
        except ApiError as error:
            if error.status == 409:  # an earlier run's number: take the next one
                continue
            raise
        return str(registered["phone_number_id"])
    raise RuntimeError("no free demo caller number left: use a fresh database")


def trunk_summary(calls: list[dict[str, Any]]) -> str:
    """One line of what reached the sandbox trunk: INVITEs, transport, credentials accepted."""
    dials = [call["sip"] for call in calls if call.get("sip")]
    transports = sorted({dial["transport"] for dial in dials})
    accepted = sum(1 for dial in dials if dial["auth"] == "ok")
    return (
        f"  SIP trunk:   {len(dials)} INVITEs to {TRUNK_ADDRESS} over {', '.join(transports)}, "
        f"credentials accepted for {accepted}"
    )
