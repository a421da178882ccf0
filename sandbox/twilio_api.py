"""What the sandbox carrier says in Twilio's words: the REST resources and error bodies it
answers with, and the forms it posts (status and AMD callbacks, the TwiML fetch)."""

from __future__ import annotations

import functools
import math
import re
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

API_VERSION = "2010-04-01"
API_PREFIX = f"/{API_VERSION}/Accounts/"
FINAL = frozenset({"completed", "busy", "no-answer", "failed", "canceled"})
E164 = re.compile(r"^\+[1-9]\d{6,14}$")


class Reply(Exception):
    """An answer other than the happy one: its HTTP status and its JSON body."""

    def __init__(self, status: int, body: dict[str, Any] | list[Any]) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


def twilio_error(status: int, code: int, message: str) -> dict[str, Any]:
    """Twilio's error body."""
    return {
        "code": code,
        "message": message,
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


def not_found(what: str) -> Reply:
    """Twilio's answer for a resource it does not have."""
    return Reply(404, twilio_error(404, 20404, f"The requested resource {what} was not found"))


def rfc2822(epoch: float | None) -> str | None:
    """A date as Twilio's REST API writes it (RFC 2822, whole seconds)."""
    return None if epoch is None else _rfc2822_second(int(epoch))


@functools.lru_cache(maxsize=64)
def _rfc2822_second(epoch: int) -> str:
    # RFC 2822 dates have whole seconds: one formatting per second serves every call.
    return format_datetime(datetime.fromtimestamp(epoch, UTC))


def parse_iso(value: str) -> float:
    """An ISO 8601 date or date and time (a list's ``StartTime>``) as an epoch."""
    text = value.strip().replace("Z", "+00:00")
    if len(text) == 10:  # a date
        text += "T00:00:00+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def account_resource(account_sid: str) -> dict[str, Any]:
    """The account resource, as Twilio's REST API answers a read of it."""
    return {
        "sid": account_sid,
        "owner_account_sid": account_sid,
        "friendly_name": "Sandbox carrier",
        "status": "active",
        "type": "Full",
        "uri": f"{API_PREFIX}{account_sid}.json",
    }


def call_resource(c: dict[str, Any]) -> dict[str, Any]:
    """A call record (a copy taken under the carrier's lock) as Twilio's call resource."""
    sid, account = c["sid"], c["account_sid"]
    return {
        "sid": sid,
        "account_sid": account,
        "parent_call_sid": None,
        "date_created": rfc2822(c["created_at"]),
        "date_updated": rfc2822(c["updated_at"]),
        "to": c["to"],
        "to_formatted": c["to"],
        "from": c["from"],
        "from_formatted": c["from"],
        "phone_number_sid": None,
        "status": c["status"],
        "start_time": rfc2822(c["start_time"]),
        "end_time": rfc2822(c["end_time"]),
        "duration": None if c["duration"] is None else str(c["duration"]),
        "price": None,
        "price_unit": "USD",
        "direction": "outbound-api",
        "answered_by": c["answered_by"],
        "api_version": API_VERSION,
        "forwarded_from": None,
        "group_sid": None,
        "caller_name": None,
        "queue_time": "0",
        "trunk_sid": None,
        "uri": f"{API_PREFIX}{account}/Calls/{sid}.json",
        "subresource_uris": {},
    }


def call_page(
    calls: list[dict[str, Any]], path: str, query: dict[str, list[str]]
) -> dict[str, Any]:
    """One page of a list of calls (newest first) filtered as the query asks, in Twilio's
    paging shape; ``calls`` are copies of the records."""

    def arg(name: str) -> str | None:
        values = query.get(name)
        return values[0] if values else None

    for key, field in (("To", "to"), ("From", "from"), ("Status", "status")):
        if arg(key):
            calls = [c for c in calls if c[field] == arg(key)]

    # A call that has not started yet is found by its creation time.
    def started(call: dict[str, Any]) -> float:
        return float(call["start_time"] or call["created_at"])

    if arg("StartTime>"):
        after = parse_iso(arg("StartTime>") or "")
        calls = [c for c in calls if started(c) >= after]
    if arg("StartTime<"):
        before = parse_iso(arg("StartTime<") or "")
        calls = [c for c in calls if started(c) <= before]
    page_size = int(arg("PageSize") or 50)
    page = int(arg("Page") or 0)
    chunk = calls[page * page_size : (page + 1) * page_size]
    more = len(calls) > (page + 1) * page_size
    base = f"{path}?PageSize={page_size}"
    return {
        "calls": [call_resource(c) for c in chunk],
        "page": page,
        "page_size": page_size,
        "start": page * page_size,
        "end": page * page_size + max(len(chunk) - 1, 0),
        "uri": f"{base}&Page={page}",
        "first_page_uri": f"{base}&Page=0",
        "next_page_uri": f"{base}&Page={page + 1}" if more else None,
        "previous_page_uri": f"{base}&Page={page - 1}" if page else None,
    }


def status_callback_form(call: dict[str, Any], timestamp: float) -> dict[str, str]:
    """The form of a status callback for the call as it is now (read under the lock)."""
    params = {
        "AccountSid": call["account_sid"],
        "CallSid": call["sid"],
        "CallStatus": call["status"],
        "From": call["from"],
        "To": call["to"],
        "Direction": "outbound-api",
        "ApiVersion": API_VERSION,
        "Timestamp": rfc2822(timestamp) or "",
        "SequenceNumber": str(call["sequence"]),
        "CallbackSource": "call-progress-events",
    }
    if call["status"] in FINAL:
        params["CallDuration"] = str(call["duration"] or 0)
        params["Duration"] = str(math.ceil((call["duration"] or 0) / 60))
    if call["answered_by"]:
        params["AnsweredBy"] = call["answered_by"]
    if call.get("sip_response") is not None:
        # A SIP-URI dial: the trunk's final response, once the call has ended.
        if call["status"] in FINAL:
            params["SipResponseCode"] = str(call["sip_response"])
    elif call["status"] == "failed":
        params["SipResponseCode"] = "500"
        params["ErrorCode"] = "32009"
    return params


def amd_callback_form(call: dict[str, Any], verdict: str, seconds: float) -> dict[str, str]:
    """The form of an asynchronous answering machine detection's callback."""
    return {
        "AccountSid": call["account_sid"],
        "CallSid": call["sid"],
        "AnsweredBy": verdict,
        "MachineDetectionDuration": str(int(seconds * 1000)),
    }


def twiml_fetch_form(call: dict[str, Any]) -> dict[str, str]:
    """The form Twilio posts to a call's ``Url`` for its TwiML once it is answered."""
    return {
        "AccountSid": call["account_sid"],
        "CallSid": call["sid"],
        "CallStatus": "in-progress",
        "From": call["from"],
        "To": call["to"],
        "Direction": "outbound-api",
        "ApiVersion": API_VERSION,
    }
