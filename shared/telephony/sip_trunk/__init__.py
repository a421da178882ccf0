"""The SIP trunk adapter of the provider port (``shared/telephony/port.py``).

A ``sip_trunk`` phone number's trunk is a provider connection (``trunk``: its address,
transport, media encryption, custom headers and digest credentials). Calls are originated by
Twilio Programmable Voice's SIP interface through the environment's Twilio account
(``provider``), and Twilio's callbacks about them come to ``/v1/telephony/sip_trunk/...``
(``callbacks``), where the trunk's SIP response decides the outcome of a call that did not
connect (``responses``).
"""

from __future__ import annotations

from shared.telephony.sip_trunk.callbacks import CALLBACKS, NAME, SipTrunkCallbacks
from shared.telephony.sip_trunk.provider import SipTrunkProvider, provider_for
from shared.telephony.sip_trunk.responses import SIP_RESPONSES, refused_credentials
from shared.telephony.sip_trunk.trunk import Trunk

__all__ = [
    "CALLBACKS",
    "NAME",
    "SIP_RESPONSES",
    "SipTrunkCallbacks",
    "SipTrunkProvider",
    "Trunk",
    "provider_for",
    "refused_credentials",
]
