"""SIP trunk calls, originated by Twilio Programmable Voice's SIP interface: the environment's
Twilio account (the Twilio adapter's provider, its client and its transport) dials
``sip:<E.164>@<trunk address>`` with the trunk's digest credentials, and runs our TwiML once
the trunk answers, so the audio reaches the voice-agent runtime as for any Twilio call."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import datetime

from shared.lifecycle.plans import ProviderUpdate
from shared.telephony import twilio
from shared.telephony.port import DialRequest, PlacedCall
from shared.telephony.sip_trunk.callbacks import (
    NAME,
    amd_callback_url,
    status_callback_url,
    twiml_url,
)
from shared.telephony.sip_trunk.trunk import Trunk
from shared.voicemail import MachineDetection


class SipTrunkProvider:
    """One trunk, dialed through one Twilio account (thread-safe: the Twilio provider is)."""

    def __init__(self, trunk: Trunk, carrier: twilio.TwilioProvider) -> None:
        self.trunk = trunk
        self.carrier = carrier

    @property
    def name(self) -> str:
        """``sip_trunk``."""
        return NAME

    @property
    def pacing_key(self) -> str:
        """The trunk's connection id: each trunk has its own budget."""
        return self.trunk.connection_id

    @property
    def connect_agent_detection(self) -> MachineDetection:
        """As for Twilio calls (Twilio runs the detection)."""
        return self.carrier.connect_agent_detection

    def place_call(self, request: DialRequest) -> PlacedCall:
        """Dial the number over the trunk, our callbacks and TwiML those of ``sip_trunk``."""
        settings = self.carrier.settings
        call_id = request.call_id
        request = replace(
            request,
            answer_url=request.answer_url or twiml_url(call_id, settings),
            status_callback_url=request.status_callback_url
            or status_callback_url(call_id, settings),
            machine_detection_callback_url=request.machine_detection_callback_url
            or amd_callback_url(call_id, settings),
        )
        return self.carrier.place_call(
            request, to=self.trunk.uri(request.to), extra=self.trunk.auth()
        )

    def find_call(
        self, to: str, callers: Sequence[str], since: datetime, exclude: Collection[str] = ()
    ) -> ProviderUpdate | None:
        """The newest call to the number on this trunk: the caller's calls since then, picked by
        the URI they reached (Twilio may record it without its parameters or headers)."""
        uri = self.trunk.uri(to)
        return self.carrier.find_call(uri, callers, since, exclude, reaches=self.trunk.reaches(to))

    def fetch_call(self, sid: str) -> ProviderUpdate | None:
        """The call at Twilio."""
        return self.carrier.fetch_call(sid)

    def end_call(self, sid: str, answered: bool) -> ProviderUpdate | None:
        """Hang up at Twilio (a BYE, or a CANCEL while ringing, on the trunk)."""
        return self.carrier.end_call(sid, answered)

    def hang_up_on_machine(self, sid: str) -> None:
        """End the call at once."""
        self.carrier.hang_up_on_machine(sid)

    def leave_message(self, sid: str, message: str) -> None:
        """Speak the message, then end the call."""
        self.carrier.leave_message(sid, message)

    def check_account(self) -> None:
        """The Twilio account that originates the trunk's calls."""
        self.carrier.check_account()


def provider_for(credentials_ref: str) -> SipTrunkProvider:
    """The trunk a ``sip_trunk`` number's ``credentials_ref`` names (its provider connection),
    dialed through the environment's Twilio account."""
    from shared import connections

    connection = connections.resolve(credentials_ref)
    if connection is None or connection.provider != NAME:
        # No call of the number can ever be placed: its batch fails with the reason.
        raise connections.ConnectionUnavailable(
            f"credentials_ref {credentials_ref!r} names no SIP trunk: a sip_trunk number "
            "dials through the trunk of its outbound_trunk_config",
            auth_failed=True,
        )
    trunk = Trunk.of_connection(
        connection.id, connection.account_id, connection.config, connection.secrets
    )
    return SipTrunkProvider(trunk, twilio.provider_for("default"))
