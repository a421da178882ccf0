"""The Twilio adapter of the provider port (``shared/telephony/port.py``).

``client`` places and looks up calls through the SDK (``http``: its pooled transport);
``callbacks`` verifies Twilio's callbacks and reads their forms; ``statuses`` maps Twilio's
words onto ours; ``twiml`` builds the documents calls run; ``urls`` the URLs Twilio is given.
Only this folder knows Twilio's field names.
"""

from __future__ import annotations

from shared.telephony.resend import FencePassed
from shared.telephony.twilio import urls
from shared.telephony.twilio.callbacks import (
    CALLBACKS,
    SIGNATURE_HEADER,
    TwilioCallbacks,
    callback_is_authentic,
    request_signature,
    signed_by_twilio,
)
from shared.telephony.twilio.client import (
    AUTH_ERROR_CODES,
    MACHINE_DETECTION,
    TwilioAccount,
    TwilioProvider,
    account_for,
    connect_agent_detection,
    provider_for,
)
from shared.telephony.twilio.http import PooledHttpClient
from shared.telephony.twilio.statuses import (
    REDUNDANT_TWILIO_STATUSES,
    TWILIO_STATUSES,
    from_twilio,
    from_twilio_report,
)

NAME = urls.NAME

__all__ = [
    "AUTH_ERROR_CODES",
    "CALLBACKS",
    "MACHINE_DETECTION",
    "NAME",
    "REDUNDANT_TWILIO_STATUSES",
    "SIGNATURE_HEADER",
    "TWILIO_STATUSES",
    "FencePassed",
    "PooledHttpClient",
    "TwilioAccount",
    "TwilioCallbacks",
    "TwilioProvider",
    "account_for",
    "callback_is_authentic",
    "connect_agent_detection",
    "from_twilio",
    "from_twilio_report",
    "provider_for",
    "request_signature",
    "signed_by_twilio",
]
