"""The sandbox carrier through the real twilio SDK."""

from __future__ import annotations

import http.client
import json
import threading
import time
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
from tests.support import free_port, wait_for

CALLER = "+12025550100"


class Receiver:
    """A callback receiver on loopback that checks each callback's Twilio signature."""

    def __init__(self) -> None:
        self.received: list[dict[str, str]] = []
        self.valid: list[bool] = []
        self.received_at: list[float] = []
        # What to answer: these statuses first, one per callback, then ``status``, after
        # ``delay_s``.
        self.answers: list[int] = []
        self.status = 204
        self.delay_s = 0.0
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
                receiver.received_at.append(time.monotonic())
                status = receiver.answers.pop(0) if receiver.answers else receiver.status
                time.sleep(receiver.delay_s)
                try:
                    self.send_response(status)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:  # the carrier stopped waiting
                    self.close_connection = True

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


# -- resending failed status callbacks, as Twilio does -----------------------------------------


def place_final_only(carrier: SandboxCarrier, to: str, callback: str) -> Any:
    """A call whose only callback is its final one."""
    return client_for(carrier).calls.create(
        to=to, from_=CALLER, url="http://127.0.0.1:9/twiml", status_callback=callback
    )


def lost(carrier: SandboxCarrier, count: int = 1) -> bool:
    return bool(carrier.stats()["callbacks_lost"] >= count)


@pytest.mark.parametrize("status", [500, 503, 404, 400])
def test_without_overrides_a_callback_answered_4xx_or_5xx_is_not_resent(
    receiver: Receiver, status: int
):
    receiver.status = status
    with carrier_with() as carrier:
        call = place_final_only(carrier, "+12125550041", receiver.url)
        wait_for(lambda: lost(carrier), 5, what="the callback to be given up")
        assert carrier.wait_idle(5)
        assert receiver.statuses(call.sid) == ["completed"]  # one try, no resend
        stats = carrier.stats()
        assert (stats["callbacks_sent"], stats["callbacks_failed"]) == (0, 1)
        assert (stats["callbacks_resent"], stats["callbacks_lost"]) == (0, 1)
        assert carrier.calls()[0]["callbacks_lost"] == ["completed"]


def test_without_overrides_a_refused_callback_is_resent_once():
    nobody = f"http://127.0.0.1:{free_port()}/status"
    with carrier_with() as carrier:
        place_final_only(carrier, "+12125550042", nobody)
        wait_for(lambda: lost(carrier), 5, what="the callback to be given up")
        stats = carrier.stats()
        assert (stats["callbacks_failed"], stats["callbacks_failed_ct"]) == (2, 2)
        assert (stats["callbacks_resent"], stats["callbacks_lost"]) == (1, 1)


def test_overrides_resend_the_failures_they_name_up_to_their_count(receiver: Receiver):
    receiver.status = 500
    with carrier_with() as carrier:
        call = place_final_only(carrier, "+12125550043", receiver.url + "#rc=3&rp=5xx")
        wait_for(lambda: lost(carrier), 10, what="the callback to be given up")
        assert receiver.statuses(call.sid) == ["completed"] * 4  # the first try and 3 more
        # Posted to the URL without its fragment, and signed as such.
        assert all(receiver.valid)
        stats = carrier.stats()
        assert (stats["callbacks_failed_5xx"], stats["callbacks_resent"]) == (4, 3)


def test_a_failure_the_overrides_do_not_name_is_not_resent(receiver: Receiver):
    receiver.status = 404
    with carrier_with() as carrier:
        call = place_final_only(carrier, "+12125550044", receiver.url + "#rc=3&rp=5xx,ct")
        wait_for(lambda: lost(carrier), 5, what="the callback to be given up")
        assert receiver.statuses(call.sid) == ["completed"]


def test_a_resent_callback_that_is_answered_is_delivered(receiver: Receiver):
    receiver.answers = [503, 500]
    with carrier_with() as carrier:
        call = place_final_only(carrier, "+12125550045", receiver.url + "#rc=5&rp=5xx")
        wait_for(lambda: carrier.stats()["callbacks_sent"] == 1, 10, what="the callback")
        assert receiver.statuses(call.sid) == ["completed"] * 3
        assert carrier.calls()[0]["callbacks_sent"] == ["completed"]
        assert carrier.stats()["callbacks_lost"] == 0


def test_an_answer_slower_than_the_read_timeout_fails_the_try(receiver: Receiver):
    receiver.delay_s = 1.0
    with carrier_with() as carrier:
        call = place_final_only(carrier, "+12125550046", receiver.url + "#rt=200&rc=1&rp=rt")
        wait_for(lambda: lost(carrier), 10, what="the callback to be given up")
        assert receiver.statuses(call.sid) == ["completed"] * 2
        assert carrier.stats()["callbacks_failed_rt"] == 2


def test_every_try_falls_within_the_total_time(receiver: Receiver):
    receiver.status = 500
    with carrier_with() as carrier:
        call = place_final_only(carrier, "+12125550047", receiver.url + "#tt=1200&rc=5&rp=all")
        wait_for(lambda: lost(carrier), 5, what="the callback to be given up")
        tries = receiver.statuses(call.sid)
        # 0.5 s, then the 1 s pause shortened to leave the last try its half second: five
        # resends allowed, but the time is up after two.
        assert 2 <= len(tries) <= 3
        assert receiver.received_at[-1] - receiver.received_at[0] < 1.2


def test_unknown_resources_and_methods_answer_twilio_errors():
    with carrier_with() as carrier:
        port = int(carrier.base_url.rsplit(":", 1)[1])
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/2010-04-01/Accounts/AC1/Queues.json")
        missing = connection.getresponse()
        assert missing.status == 404 and json.loads(missing.read())["code"] == 20404
        connection.request("GET", "/sandbox/nothing")
        unknown = connection.getresponse()
        assert unknown.status == 404 and json.loads(unknown.read())["code"] == 20404
        connection.request("DELETE", "/sandbox/reset")
        refused = connection.getresponse()
        assert refused.status == 405 and json.loads(refused.read())["code"] == 20004
        assert refused.getheader("Content-Type") == "application/json"
        connection.close()
