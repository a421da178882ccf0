"""The provider port: what the dispatcher asks of a telephony provider, in our terms.

Two sides. A ``Provider`` is one account at a provider: it places, looks up and ends calls,
and acts on a call a machine answered. ``Callbacks`` is the provider's side of our HTTP
endpoints: it verifies a callback, parses a status callback or a machine-detection callback
into a provider-neutral report, and builds the document an answered call runs.

Everything crossing the port speaks our words (``CallStatus``, ``Outcome``, ``AnsweredBy``);
the provider's own words stay in the adapter's folder (``shared/telephony/twilio/``), except
``provider_status``, the provider's word kept for the record, and the call-progress words
several providers share (``call_progress.py``). Adapters are registered in
``shared/telephony/registry.py``.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Protocol, runtime_checkable

from shared.lifecycle.plans import ProviderUpdate
from shared.lifecycle.states import CallStatus
from shared.voicemail import MachineDetection

__all__ = [
    "AnswerReports",
    "AnsweredBy",
    "Callbacks",
    "DetectionVerdict",
    "DialRequest",
    "MessageDocuments",
    "PlacedCall",
    "Provider",
    "ProviderUpdate",
]


@dataclass(frozen=True)
class DialRequest:
    """One outbound call to place.

    The callback URLs are the adapter's to build (``shared.urls.provider_url``); a request may
    carry its own (tests, the sandbox), which then win.
    """

    call_id: str
    to: str
    from_: str
    ringing_timeout_s: int
    # The provider ends an answered call at this length.
    time_limit_s: int
    # time.monotonic() by which the request must be on its way, else it is not sent at all
    # (ProviderError with ``fenced``): the dial's fence against a cancel or pause.
    send_before: float | None = None
    # Answering machine detection, always asynchronous: the call is connected at once, and the
    # verdict comes on a callback of its own.
    machine_detection: MachineDetection = MachineDetection.OFF
    answer_url: str | None = None
    status_callback_url: str | None = None
    machine_detection_callback_url: str | None = None


@dataclass(frozen=True)
class PlacedCall:
    """The provider accepted the call: its SID, the provider's word for its status, and that
    status in our terms (``update``, with the caller number it was placed from)."""

    sid: str
    provider_status: str
    update: ProviderUpdate

    @property
    def status(self) -> CallStatus:
        """The placed call's status in our terms (``dispatched`` unless the provider says more)."""
        return self.update.status


class AnsweredBy(StrEnum):
    """What answering machine detection found on the line."""

    HUMAN = "human"
    MACHINE = "machine"
    FAX = "fax"
    UNKNOWN = "unknown"


_ANSWERED_BY_WORDS = frozenset(kind.value for kind in AnsweredBy)


@dataclass(frozen=True)
class DetectionVerdict:
    """An answering machine detection verdict on the provider call ``sid``.

    ``answered_by`` is what is recorded on the call: ``human``, ``fax``, ``unknown``, or
    ``machine`` optionally followed by ``_`` and the provider's detail (``machine_end_beep``);
    a machine verdict always starts with ``machine`` (``shared.voicemail.is_machine``).
    """

    sid: str
    answered_by: str
    detection_ms: int | None = None

    @property
    def kind(self) -> AnsweredBy:
        """The verdict without the provider's detail."""
        word = self.answered_by.split("_", 1)[0]
        return AnsweredBy(word) if word in _ANSWERED_BY_WORDS else AnsweredBy.UNKNOWN


class Provider(Protocol):
    """A provider account able to place, look up and end calls (thread-safe)."""

    @property
    def name(self) -> str:
        """The provider's name, as phone numbers and the registry spell it (``twilio``)."""
        ...

    @property
    def pacing_key(self) -> str:
        """The account the provider paces calls by: dials sharing it share a pacing limit."""
        ...

    @property
    def connect_agent_detection(self) -> MachineDetection:
        """The machine detection a call that keeps its agent on the line whatever answers is
        placed with (as the provider's settings say; off when detection costs extra)."""
        ...

    def place_call(self, request: DialRequest) -> PlacedCall:
        """Place the call; raise ProviderError when it was not (or may not have been) placed."""
        ...

    def find_call(
        self, to: str, callers: Sequence[str], since: datetime, exclude: Collection[str] = ()
    ) -> ProviderUpdate | None:
        """The newest call to ``to`` from one of ``callers`` created at or after ``since``, if
        any, with the caller number it was placed from; never one whose SID is in ``exclude``
        (an earlier attempt's calls)."""
        ...

    def fetch_call(self, sid: str) -> ProviderUpdate | None:
        """The provider's current view of the call ``sid``."""
        ...

    def end_call(self, sid: str, answered: bool) -> ProviderUpdate | None:
        """Hang up a live call; its status as the provider then reports it."""
        ...

    def hang_up_on_machine(self, sid: str) -> None:
        """End the answered call ``sid``, which a machine answered, at once."""
        ...

    def leave_message(self, sid: str, message: str) -> None:
        """Speak ``message`` on the answered call ``sid`` (a machine recording it), then end
        the call."""
        ...

    def check_account(self) -> None:
        """Raise ProviderError unless the provider accepts the account's credentials."""
        ...


class Callbacks(Protocol):
    """The provider's side of our callback endpoints (``/v1/telephony/{name}/...``).

    Callbacks come as form fields (``params``); ``headers`` are keyed by lower-case name. Every
    method is cheap and pure but ``verify`` (which reads the settings): status callbacks come
    several times per call.
    """

    @property
    def name(self) -> str:
        """The provider's name: the ``{provider}`` segment of the callback paths."""
        ...

    @property
    def signature_header(self) -> str:
        """The header that signs a callback, as errors name it (``X-Twilio-Signature``)."""
        ...

    @property
    def answer_endpoint(self) -> str:
        """The path segment of the answer-document endpoint (``twiml``)."""
        ...

    @property
    def answer_document_name(self) -> str:
        """What the answer document is called (``TwiML``), for the API's description."""
        ...

    def verify(self, url: str, params: Mapping[str, str], headers: Mapping[str, str]) -> bool:
        """Whether the callback to our public ``url`` came from our account at the provider."""
        ...

    def status_update(self, params: Mapping[str, str]) -> ProviderUpdate | None:
        """A status callback in our terms; None when it needs no work (a status that never
        tells more than another, or one we do not know)."""
        ...

    def detection_verdict(self, params: Mapping[str, str]) -> DetectionVerdict:
        """A machine-detection callback in our terms."""
        ...

    def answer_document(self, call_id: str) -> tuple[str, str]:
        """The document the answered call runs (its media type and body): connect its audio to
        the voice-agent runtime."""
        ...


@runtime_checkable
class AnswerReports(Protocol):
    """``Callbacks`` of a provider whose request for the answer document is also its only word
    that the call was answered (Vobiz's answer URL): the API queues what that request says,
    as it would a status callback."""

    def answer_update(self, params: Mapping[str, str]) -> ProviderUpdate | None:
        """The answer document's request in our terms (the call answered); None when it says
        nothing more."""
        ...


@runtime_checkable
class MessageDocuments(Protocol):
    """``Callbacks`` of a provider that fetches the document a live call switches to (Vobiz's
    transfer of a call to a URL): the API serves, at ``/v1/telephony/{provider}/message/...``,
    the document that speaks the ``text`` of its query and ends the call, to a request the
    provider signed (the text is in the signed URL)."""

    def message_document(self, message: str) -> tuple[str, str]:
        """The document (its media type and body) that speaks ``message``, then hangs up."""
        ...
