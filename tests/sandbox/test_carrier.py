"""The sandbox carrier through the real twilio SDK."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import requests
from twilio.base.exceptions import TwilioRestException
from twilio.http.http_client import TwilioHttpClient
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from sandbox import SandboxCarrier, SandboxConfig
from shared.settings import SANDBOX_ACCOUNT_SID, SANDBOX_AUTH_TOKEN
from tests.support import wait_for

CALLER = "+12025550100"


class Receiver:
    """A callback receiver on loopback that checks each callback's Twilio signature."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.valid: list[bool] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"])).decode()
                params = dict(urllib.parse.parse_qsl(body))
                url = f"http://127.0.0.1:{receiver.port}{self.path}"
                ok = RequestValidator(SANDBOX_AUTH_TOKEN).validate(
                    url, params, self.headers.get("X-Twilio-Signature", "")
                )
                receiver.received.append(params)
                receiver.valid.append(bool(ok))
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/status"

    def statuses(self, sid: str) -> list[str]:
        return [p["CallStatus"] for p in self.received if p["CallSid"] == sid]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver()
    yield r
    r.server.shutdown()


def carrier_with(**config: Any) -> SandboxCarrier:
    return SandboxCarrier(SandboxConfig.from_dict(config)).start()


def client_for(
    carrier: SandboxCarrier, token: str = SANDBOX_AUTH_TOKEN, timeout: float = 5
) -> Client:
    client = Client(SANDBOX_ACCOUNT_SID, token, http_client=TwilioHttpClient(timeout=timeout))
    client.api.base_url = carrier.base_url
    return client


def place(client: Client, to: str, callback: str, **options: Any) -> Any:
    return client.calls.create(
        to=to,
        from_=CALLER,
        url="http://127.0.0.1:9/twiml",
        status_callback=callback,
        status_callback_event=["initiated", "ringing", "answered", "completed"],
        **options,
    )


def test_lifecycle_callbacks_in_order_and_signed(receiver: Receiver):
    with carrier_with() as carrier:
        call = place(client_for(carrier), "+12125550001", receiver.url)
        assert call.sid.startswith("CA") and call.status == "queued"
        wait_for(lambda: "completed" in receiver.statuses(call.sid), 5)
        assert receiver.statuses(call.sid) == ["initiated", "ringing", "in-progress", "completed"]
        assert all(receiver.valid)
        final = receiver.received[-1]
        assert final["CallDuration"] == "1" and final["SequenceNumber"] == "3"
        assert client_for(carrier).calls(call.sid).fetch().status == "completed"


@pytest.mark.parametrize("outcome", ["busy", "no-answer", "failed"])
def test_unanswered_outcomes(receiver: Receiver, outcome: str):
    with carrier_with(rules=[{"pattern": "+1646*", "outcome": outcome}]) as carrier:
        call = place(client_for(carrier), "+16465550001", receiver.url)
        wait_for(lambda: outcome in receiver.statuses(call.sid), 5)
        assert "in-progress" not in receiver.statuses(call.sid)


def test_voicemail_is_answered_by_a_machine_when_detection_is_asked_for(receiver: Receiver):
    with carrier_with(rules=[{"pattern": "*", "outcome": "voicemail"}]) as carrier:
        detected = place(
            client_for(carrier), "+12125550002", receiver.url, machine_detection="Enable"
        )
        plain = place(client_for(carrier), "+12125550012", receiver.url)
        wait_for(lambda: "completed" in receiver.statuses(plain.sid), 5)
        wait_for(lambda: "completed" in receiver.statuses(detected.sid), 5)
        finals = {p["CallSid"]: p for p in receiver.received if p["CallStatus"] == "completed"}
        assert finals[detected.sid]["AnsweredBy"] == "machine_end_beep"
        assert "AnsweredBy" not in finals[plain.sid]


def test_a_call_ringing_past_its_timeout_ends_no_answer(receiver: Receiver):
    with carrier_with(rules=[{"pattern": "*", "ring_seconds": 30}]) as carrier:
        call = place(client_for(carrier), "+12125550022", receiver.url, timeout=1)
        wait_for(lambda: "no-answer" in receiver.statuses(call.sid), 5)
        assert receiver.statuses(call.sid) == ["initiated", "ringing", "no-answer"]
        assert carrier.calls()[0]["timeout"] == 1


def test_bad_credentials_invalid_number_and_429(receiver: Receiver):
    with carrier_with(rules=[{"pattern": "+1718*", "http_error": 429}]) as carrier:
        with pytest.raises(TwilioRestException) as bad_auth:
            place(client_for(carrier, token="wrong"), "+12125550003", receiver.url)
        assert bad_auth.value.status == 401 and bad_auth.value.code == 20003
        with pytest.raises(TwilioRestException) as invalid:
            place(client_for(carrier), "12345", receiver.url)
        assert invalid.value.code == 21211
        with pytest.raises(TwilioRestException) as busy:
            place(client_for(carrier), "+17185550001", receiver.url)
        assert busy.value.status == 429 and busy.value.code == 20429
        assert carrier.calls() == []


def test_list_finds_a_just_created_call_and_cancel_ends_it(receiver: Receiver):
    with carrier_with(rules=[{"pattern": "*", "ring_seconds": 5}]) as carrier:
        client = client_for(carrier)
        since = datetime.now(UTC) - timedelta(seconds=5)
        call = place(client, "+12125550004", receiver.url)
        found = client.calls.list(to="+12125550004", start_time_after=since, limit=20)
        assert [c.sid for c in found] == [call.sid]
        assert client.calls.list(to="+12125550005", start_time_after=since) == []
        assert client.calls(call.sid).update(status="canceled").status == "canceled"
        wait_for(lambda: "canceled" in receiver.statuses(call.sid), 5)


def test_seeded_outcomes_are_deterministic():
    rules = [{"pattern": "*", "outcome": {"completed": 0.5, "busy": 0.5}}]
    outcomes = []
    for _ in range(2):
        with carrier_with(seed=5, rules=rules) as carrier:
            client = client_for(carrier)
            for i in range(20):
                client.calls.create(to=f"+1212555{i:04d}", from_=CALLER, url="http://x/")
            outcomes.append([c["outcome"] for c in carrier.calls()])
    assert outcomes[0] == outcomes[1] and set(outcomes[0]) == {"completed", "busy"}


def test_timeout_rule_is_ambiguous_for_the_client():
    with carrier_with(rules=[{"pattern": "*", "timeout_seconds": 1.0}]) as carrier:
        with pytest.raises(requests.exceptions.ReadTimeout):
            client_for(carrier, timeout=0.2).calls.create(
                to="+12125550006", from_=CALLER, url="http://x/"
            )
        assert [c["to"] for c in carrier.calls()] == ["+12125550006"]


def test_rest_api_over_kept_alive_closed_and_chunked_connections():
    with carrier_with() as carrier:
        port = int(carrier.base_url.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        # Several requests over one kept-alive connection, a chunked body among them.
        connection.request("POST", "/sandbox/reset")
        assert connection.getresponse().read() == b'{"reset": true}'
        body = json.dumps({"seed": 7})
        connection.request(
            "POST", "/sandbox/config", body=iter([body.encode()]), encode_chunked=True
        )
        assert json.loads(connection.getresponse().read()) == {"configured": True}
        assert carrier.config.seed == 7
        # A request the carrier fails on answers 500, and the carrier goes on serving.
        connection.request("POST", "/sandbox/config", body=b"{not json")
        failed = connection.getresponse()
        assert failed.status == 500 and json.loads(failed.read())["code"] == 20500
        connection.request("GET", "/2010-04-01/Accounts/ACnobody/Calls.json")
        assert connection.getresponse().status == 401
        connection.close()
        # Connection: close is honoured.
        closing = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        closing.request("GET", "/sandbox/stats", headers={"Connection": "close"})
        response = closing.getresponse()
        assert response.status == 200 and response.getheader("Connection") == "close"
        assert json.loads(response.read())["calls_created"] == 0
        closing.close()
