"""The demo through Vobiz (``make demo PROVIDER=vobiz``): a ``vobiz`` caller number on the
environment's Vobiz account, which without Vobiz credentials is the sandbox carrier's: the
calls go through the official SDK to the carrier's Vobiz API, which plays them and posts
Vobiz's signed callbacks back."""

from __future__ import annotations

from typing import Any

from cli.stack.net import ApiClient

CALLER_NUMBER = "+12025550160"


def vobiz_caller_number(client: ApiClient) -> str:
    """The dev workspace's Vobiz caller number (registered the first time); its id."""
    for number in client.get("/v1/voiceai/phone-numbers"):
        if number["phone_number"] == CALLER_NUMBER and number["provider"] == "vobiz":
            return str(number["phone_number_id"])
    registered = client.post(
        "/v1/voiceai/phone-numbers",
        {"phone_number": CALLER_NUMBER, "provider": "vobiz", "label": "demo Vobiz"},
    )
    return str(registered["phone_number_id"])


def vobiz_summary(calls: list[dict[str, Any]]) -> str:
    """One line of what went through Vobiz's API: calls placed, answer XML fetched."""
    placed = [call for call in calls if call.get("api") == "vobiz"]
    fetched = sum(1 for call in placed if "<Stream" in (call.get("twiml") or ""))
    return (
        f"  Vobiz:       {len(placed)} calls placed through Vobiz's API (the SDK), "
        f"VobizXML <Stream> fetched by {fetched} answered calls"
    )
