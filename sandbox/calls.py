"""The sandbox carrier's calls: placing one as the rules say (outcome, latency, errors), its
lifecycle played on the event loop, updates applied to it, and the records tests read."""

from __future__ import annotations

import asyncio
import html
import json
import math
import random
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from sandbox import dialects, sip
from sandbox.callbacks import Outbox
from sandbox.config import Rule, SandboxConfig
from sandbox.loop import LoopThread
from sandbox.twilio_api import (
    E164,
    FINAL,
    Reply,
    call_page,
    call_resource,
    not_found,
    twilio_error,
)

SAY = re.compile(r"<Say[^>]*>(.*?)</Say>", re.DOTALL)
CALLBACK_COUNTS = ("callbacks_sent", "callbacks_failed", "callbacks_resent", "callbacks_lost")


class Calls:
    """Every call placed, their lifecycles and the carrier's counts, behind one lock (the
    loop's thread changes them; tests read them from theirs)."""

    def __init__(self, config: SandboxConfig, loop: LoopThread) -> None:
        self.config = config
        self.lock = threading.Lock()
        self.stats: Counter[str] = Counter()
        self._loop = loop
        self.outbox = Outbox(self.lock, self.stats, loop, lambda: self.config)
        self._calls: dict[str, dict[str, Any]] = {}
        self._order: list[str] = []
        self._attempts: Counter[str] = Counter()
        self._requests: Counter[str] = Counter()
        self.lifecycles = 0  # calls whose lifecycle is still being played, under the lock
        self._live = 0

    @property
    def running(self) -> bool:
        return self.outbox.running

    # -- inspection ---------------------------------------------------------------------------

    def records(self) -> list[dict[str, Any]]:
        """Every call placed, oldest first (copies)."""
        with self.lock:
            return [json.loads(json.dumps(self._calls[sid])) for sid in self._order]

    def counts(self) -> dict[str, Any]:
        """The carrier's counts (see ``SandboxCarrier.stats``)."""
        with self.lock:
            by_status = Counter(call["status"] for call in self._calls.values())
            return {
                **dict.fromkeys(CALLBACK_COUNTS, 0),
                **self.stats,
                "calls_created": len(self._order),
                "by_status": dict(by_status),
                "live_calls": self._live,
            }

    def reset(self) -> None:
        """Forget every recorded call and count."""
        with self.lock:
            self._calls.clear()
            self._order.clear()
            self._attempts.clear()
            self._requests.clear()
            self.stats.clear()

    def idle(self) -> bool:
        """No lifecycle event, callback or fetch pending."""
        with self.lock:
            return self.lifecycles == 0 and self.outbox.in_flight == 0

    def resource(self, call: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            return call_resource(dict(call))

    # -- the calls resources ------------------------------------------------------------------

    def create(self, account_sid: str, form: dict[str, list[str]], received_at: float) -> Any:
        """Place a call, as the number's rule says; its resource (or raise ``Reply``)."""
        first = {k: v[0] for k, v in form.items()}
        to, from_ = first.get("To", ""), first.get("From", "")
        number = sip.dialed_number(to)
        with self.lock:
            config = self.config
            rule = config.rule_for(number)
            attempt = self._attempts[to]
            request_index = self._requests[to]
            self._requests[to] += 1
            self.stats["create_requests_total"] += 1
        # Draws depend on how often this number was asked for, never on thread timing.
        rng = random.Random(f"{config.seed}:{to}:{request_index}")
        if rule.http_error and rng.random() < rule.http_error_probability:
            with self.lock:
                self.stats[f"rejected_{rule.http_error}"] += 1
            too_many = rule.http_error == 429
            raise Reply(
                rule.http_error,
                twilio_error(
                    rule.http_error,
                    rule.error_code or (20429 if too_many else 20500),
                    rule.error_message
                    or ("Too Many Requests" if too_many else "Internal Server Error"),
                ),
            )
        uri = sip.parse(to)
        if not E164.match(number) or (uri is None and sip.is_sip(to)):
            raise Reply(
                400, twilio_error(400, 21211, f"The 'To' number {to} is not a valid phone number.")
            )
        if not first.get("Url") and not first.get("Twiml"):
            raise Reply(400, twilio_error(400, 21205, "Url parameter is required."))
        outcome = _outcome(rule, attempt, rng)
        sip_record, sip_response = None, None
        if uri is not None:
            # A SIP-URI dial: its trunk's answer decides the outcome (sandbox.sip).
            sip_response, sip_record = sip.check(uri, config.sip_trunks, first)
            if sip_response is None:
                sip_response = rule.sip_response or sip.RESPONSE_OF_OUTCOME[outcome]
            if sip_response >= 300 or rule.sip_response:
                outcome = sip.outcome_of(sip_response)
        now = received_at + (rule.api_latency_ms or 0) / 1000
        sid = "CA" + uuid.uuid4().hex
        call: dict[str, Any] = {
            "sid": sid,
            "account_sid": account_sid,
            "to": to,
            "number": number,
            "from": from_,
            "status": "queued",
            "outcome": outcome,
            "created_at": now,
            "updated_at": now,
            "start_time": None,
            "end_time": None,
            "duration": None,
            "answered_by": None,
            "url": first.get("Url"),
            "status_callback": first.get("StatusCallback"),
            "events": form.get("StatusCallbackEvent", []) or ["completed"],
            "machine_detection": first.get("MachineDetection"),
            # Asynchronous detection: the call runs its TwiML at once, and the verdict is
            # posted to its own callback once detection ends.
            "async_amd": first.get("AsyncAmd", "").lower() == "true",
            "amd_callback": first.get("AsyncAmdStatusCallback"),
            "amd_seconds": rule.amd_seconds
            if rule.amd_seconds is not None
            else config.default_amd_seconds,
            # TwiML applied to the live call by an update, and the text of each <Say> spoken.
            "twiml_updates": [],
            "said": [],
            "timeout": int(first.get("Timeout") or 60),
            "time_limit": int(first.get("TimeLimit") or 14400),
            "sequence": 0,
            "callbacks_sent": [],
            # Callbacks given up after every try the URL's connection overrides allow.
            "callbacks_lost": [],
            "twiml": None,
            "agent_config": None,
            # A SIP-URI dial: what reached the trunk, and its final response.
            "sip": sip_record,
            "sip_response": sip_response,
        }
        ring = rule.ring_seconds if rule.ring_seconds is not None else config.default_ring_seconds
        talk = rule.talk_seconds if rule.talk_seconds is not None else config.default_talk_seconds
        if ring > call["timeout"]:
            # Like Twilio: a call that rings longer than the request's Timeout ends no-answer.
            ring, outcome = call["timeout"], "no-answer"
            call["outcome"] = outcome
            if call["sip"] is not None:
                call["sip_response"] = sip.RESPONSE_OF_OUTCOME[outcome]
        with self.lock:
            self._attempts[to] += 1
            self._calls[sid] = call
            self._order.append(sid)
            self._live += 1
            self.stats["max_live_calls"] = max(self.stats["max_live_calls"], self._live)
            self.lifecycles += 1
            resource = call_resource(call)
        self._loop.spawn(lambda: self._play(sid, outcome, ring, talk))
        return resource

    def find(self, account_sid: str, sid: str) -> dict[str, Any]:
        """The account's call ``sid`` (or raise ``Reply`` 404)."""
        with self.lock:
            call = self._calls.get(sid)
        if call is None or call["account_sid"] != account_sid:
            raise not_found(sid)
        return call

    def page(self, account_sid: str, path: str, query: dict[str, list[str]]) -> dict[str, Any]:
        """A page of the account's calls, newest first, filtered as the query asks."""
        with self.lock:
            calls = [dict(self._calls[sid]) for sid in reversed(self._order)]
        return call_page([c for c in calls if c["account_sid"] == account_sid], path, query)

    def update(self, account_sid: str, sid: str, form: dict[str, list[str]]) -> Any:
        """Cancel, hang up or redirect (TwiML) a call, as Twilio allows in its state."""
        call = self.find(account_sid, sid)
        wanted = (form.get("Status") or [""])[0]
        twiml = (form.get("Twiml") or [""])[0]
        if twiml:
            if call["status"] != "in-progress":
                raise Reply(
                    400, twilio_error(400, 21220, "Call is not in-progress. Cannot redirect.")
                )
            self._run_twiml(sid, twiml)
        elif wanted == "canceled" and call["status"] in ("queued", "initiated", "ringing"):
            self._finish(sid, "canceled", None)
        elif wanted == "completed" and call["status"] == "in-progress":
            talked = time.time() - (call["start_time"] or time.time())
            self._finish(sid, "completed", talked)
        elif wanted:
            raise Reply(400, twilio_error(400, 21220, "Call is not in-progress. Cannot redirect."))
        return self.resource(call)

    def _run_twiml(self, sid: str, twiml: str) -> None:
        """Run TwiML on a live call as Twilio would for its verbs here: each ``<Say>`` takes
        ``say_seconds``, and ``<Hangup/>`` (or the end of the document) ends the call."""
        said = [html.unescape(text) for text in SAY.findall(twiml)]
        with self.lock:
            call = self._calls[sid]
            call["twiml_updates"].append(twiml)
            call["said"].extend(said)
            self.lifecycles += 1
            speaking = self.config.say_seconds * len(said)

        async def run() -> None:
            try:
                if speaking:
                    await asyncio.sleep(speaking)
                if self.running:
                    talked = time.time() - (call["start_time"] or time.time())
                    self._finish(sid, "completed", talked)
            finally:
                with self.lock:
                    self.lifecycles -= 1

        self._loop.spawn(run)

    # -- call lifecycles ----------------------------------------------------------------------

    async def _play(self, sid: str, outcome: str, ring: float, talk: float) -> None:
        """One call's lifecycle, step after step (a step that fails is counted and skipped)."""
        steps: list[tuple[float, Callable[[], None]]] = [
            (0.0, lambda: self._progress(sid, "initiated")),
            (0.0, lambda: self._progress(sid, "ringing")),
        ]
        if outcome in ("completed", "voicemail"):
            steps.append((ring, lambda: self._answer(sid)))
            steps.append((talk, lambda: self._finish(sid, "completed", talk)))
        else:
            steps.append((ring, lambda: self._finish(sid, outcome, None)))
        try:
            for delay, step in steps:
                if delay > 0:
                    await asyncio.sleep(delay)
                if not self.running:
                    return
                try:
                    step()
                except Exception as exc:  # a bad step must not stop every other call
                    with self.lock:
                        self.stats["event_errors"] += 1
                        self.stats[f"event_error:{exc.__class__.__name__}"] += 1
        finally:
            with self.lock:
                self.lifecycles -= 1

    def _set(self, sid: str, status: str, **fields: Any) -> dict[str, Any] | None:
        """Move a live call to ``status``; None if it already ended."""
        with self.lock:
            call = self._calls[sid]
            if call["status"] in FINAL:
                return None
            call.update(status=status, updated_at=time.time(), **fields)
            if status in FINAL:
                self._live -= 1
            return call

    def _progress(self, sid: str, status: str) -> None:
        call = self._set(sid, status)
        if call is not None and status in call["events"]:
            self._callback(call)

    @staticmethod
    def _verdict(call: dict[str, Any]) -> str | None:
        """What answering machine detection says of the call; None when it was not asked for
        (a voicemail is then just a completed call, as on Twilio). Waiting for the end of the
        greeting (DetectMessageEnd) reports how it ended; otherwise a machine is reported as
        soon as it starts (asynchronous detection) or after the greeting (synchronous)."""
        if not call["machine_detection"]:
            return None
        if call["outcome"] != "voicemail":
            return "human"
        if call["async_amd"] and call["machine_detection"] != "DetectMessageEnd":
            return "machine_start"
        return "machine_end_beep"

    def _answer(self, sid: str) -> None:
        with self.lock:
            verdict = self._verdict(self._calls[sid])
            detect_later = verdict is not None and self._calls[sid]["async_amd"]
        # Synchronous detection runs before the call is connected: the answer carries it.
        answered_by = None if detect_later else verdict
        call = self._set(sid, "in-progress", start_time=time.time(), answered_by=answered_by)
        if call is None:
            return
        if "answered" in call["events"]:
            self._callback(call)
        dialect = dialects.of(call)
        if (self.config.fetch_twiml or dialect.always_fetches_answer) and call["url"]:
            with self.lock:
                url = call["url"]
                token = self.config.accounts.get(call["account_sid"], "")
                params = dialect.answer_form(call)
            self.outbox.fetch_twiml(call, url, token, params, self.config.fetch_twiml)
        if detect_later and verdict is not None:
            with self.lock:
                self.lifecycles += 1
            self._loop.spawn(lambda: self._detect(sid, verdict, call["amd_seconds"]))

    async def _detect(self, sid: str, verdict: str, seconds: float) -> None:
        """Asynchronous detection: the verdict, after ``seconds``, on the call and to its AMD
        callback (signed like the status callbacks), if the call is still up by then."""
        try:
            await asyncio.sleep(seconds)
            with self.lock:
                call = self._calls[sid]
                if call["status"] != "in-progress" or not self.running:
                    return
                call["answered_by"] = verdict
                url = call["amd_callback"]
                token = self.config.accounts.get(call["account_sid"], "")
                params = dialects.of(call).amd_form(call, verdict, seconds)
            if url and not self.config.rule_for(call["number"]).drop_callbacks:
                self.outbox.post(call, url, params, token)
        finally:
            with self.lock:
                self.lifecycles -= 1

    def _finish(self, sid: str, status: str, talked: float | None) -> None:
        duration = math.ceil(talked) if talked is not None else 0
        fields: dict[str, Any] = {"end_time": time.time(), "duration": duration}
        with self.lock:
            call = self._calls[sid]
            if call["start_time"] is not None and call["answered_by"] is None:
                # Detection still running at the end gives its verdict with the call's end.
                fields["answered_by"] = self._verdict(call)
        ended = self._set(sid, status, **fields)
        if ended is not None:
            # Twilio always sends the final status to a status callback.
            self._callback(ended)

    def _callback(self, call: dict[str, Any]) -> None:
        dialect = dialects.of(call)
        url = dialect.callback_url(call)
        if not url or self.config.rule_for(call["number"]).drop_callbacks:
            return
        with self.lock:
            params = dialect.status_form(call, time.time())
            call["sequence"] += 1
            token = self.config.accounts.get(call["account_sid"], "")
            copies = 2 if random.random() < self.config.duplicate_callbacks_probability else 1
        for _ in range(copies):
            self.outbox.post(call, url, params, token)


def _outcome(rule: Rule, attempt: int, rng: random.Random) -> str:
    """The outcome the rule gives the ``attempt``-th call to a number (0 for the first)."""
    if rule.outcome_sequence:
        return rule.outcome_sequence[min(attempt, len(rule.outcome_sequence) - 1)]
    outcome = rule.outcome or "completed"
    if isinstance(outcome, dict):
        draw, cumulative = rng.random(), 0.0
        chosen = next(iter(outcome))
        for name, weight in outcome.items():
            cumulative += weight
            if draw < cumulative:
                return name
        return chosen
    return outcome
