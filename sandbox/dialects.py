"""How the carrier speaks to each provider's clients about a call: the forms of its callbacks
and of the answer document's fetch, where each goes, how each is signed, and where the answer
document names the agent config. A call placed through Twilio's REST API speaks Twilio's, one
placed through Vobiz's (``sandbox.vobiz_api``) speaks Vobiz's; the lifecycle is the same."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, NamedTuple

from sandbox import twilio_api, vobiz_api
from shared.telephony.twilio import request_signature

Form = dict[str, str]


class Dialect(NamedTuple):
    status_form: Callable[[dict[str, Any], float], Form]
    amd_form: Callable[[dict[str, Any], str, float], Form]
    answer_form: Callable[[dict[str, Any]], Form]
    # The URL a status callback of the call as it is now goes to.
    callback_url: Callable[[dict[str, Any]], str | None]
    # The headers that sign a form posted to a URL with an account's token.
    signature_headers: Callable[[str, str, Form], dict[str, str]]
    # The agent config URL in the answer document.
    agent_config: re.Pattern[str]
    # The provider fetches the answer document of every answered call (else only when the
    # carrier's config says fetch_twiml).
    always_fetches_answer: bool


TWILIO = Dialect(
    status_form=twilio_api.status_callback_form,
    amd_form=twilio_api.amd_callback_form,
    answer_form=twilio_api.twiml_fetch_form,
    callback_url=lambda call: call["status_callback"],
    signature_headers=lambda token, url, params: {
        "X-Twilio-Signature": request_signature(token, url, params)
    },
    agent_config=re.compile(r'<Parameter\s+name="agent_config_url"\s+value="([^"]*)"'),
    always_fetches_answer=False,
)

VOBIZ = Dialect(
    status_form=vobiz_api.status_callback_form,
    amd_form=vobiz_api.amd_callback_form,
    answer_form=vobiz_api.answer_fetch_form,
    callback_url=vobiz_api.callback_url,
    signature_headers=vobiz_api.signature_headers,
    agent_config=re.compile(r"agent_config_url=([^,\"]*)"),
    always_fetches_answer=True,
)


def of(call: dict[str, Any]) -> Dialect:
    """The dialect of the API the call was placed through."""
    return VOBIZ if call.get("api") == vobiz_api.NAME else TWILIO
