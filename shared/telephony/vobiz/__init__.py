"""The Vobiz adapter of the provider port (``shared/telephony/port.py``), through the official
SDK (``vobiz-python``).

``client`` has the account (the environment's, a provider connection's, or the sandbox
carrier's) and reads the SDK's errors and resources; ``provider`` places, looks up and ends
calls; ``callbacks`` verifies Vobiz's V3 signatures and reads its forms; ``statuses`` maps
Vobiz's words onto ours; ``xml`` builds the VobizXML an answered call runs; ``urls`` the URLs
Vobiz is given. Only this folder knows Vobiz's field names.
"""

from __future__ import annotations

from shared.telephony.vobiz import urls
from shared.telephony.vobiz.callbacks import (
    CALLBACKS,
    NONCE_HEADER,
    SIGNATURE_HEADER,
    VobizCallbacks,
    signed_by_vobiz,
)
from shared.telephony.vobiz.client import VobizAccount, account_for, provider_error
from shared.telephony.vobiz.provider import VobizProvider, provider_for
from shared.telephony.vobiz.statuses import VOBIZ_STATUSES, from_vobiz

NAME = urls.NAME

__all__ = [
    "CALLBACKS",
    "NAME",
    "NONCE_HEADER",
    "SIGNATURE_HEADER",
    "VOBIZ_STATUSES",
    "VobizAccount",
    "VobizCallbacks",
    "VobizProvider",
    "account_for",
    "from_vobiz",
    "provider_error",
    "provider_for",
    "signed_by_vobiz",
]
