"""What the request and response bodies of every domain share: the status vocabularies, numbers
that refuse booleans, and the base of client-supplied open configuration."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic_core import PydanticCustomError

from shared.storable import FreeJson

BatchStatus = Literal["pending", "in_progress", "completed", "failed", "cancelled"]
RecipientStatus = Literal[
    "pending",
    "dispatched",
    "initiated",
    "in_progress",
    "completed",
    "failed",
    "cancelled",
    "voicemail",
]
PhoneProvider = Literal["twilio", "vobiz", "sip_trunk"]
PausedReason = Literal["manual", "provider_unreachable"]


def _not_a_bool(kind: str) -> BeforeValidator:
    # A JSON true/false would otherwise be taken as 1/0 (pydantic's lax mode reads a bool as a
    # number); a form field's "5" is still read as 5.
    def check(value: object) -> object:
        if isinstance(value, bool):
            raise PydanticCustomError(f"{kind}_type", "Input should be a number, not a boolean")
        return value

    return BeforeValidator(check)


# A number a client sends: a JSON number (or a numeric string), never a boolean.
VoiceNumber = Annotated[float, _not_a_bool("float")]
Integer = Annotated[int, _not_a_bool("int")]


class OpenModel(BaseModel):
    """Client-supplied configuration: unknown keys are kept and passed on, not rejected."""

    model_config = ConfigDict(extra="allow")
    # The unknown keys' values are stored and passed on: storable text, bounded in size.
    __pydantic_extra__: dict[str, FreeJson] = Field(init=False)


MAX_VOICEMAIL_MESSAGE = 10_000
