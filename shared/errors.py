"""The one error hierarchy. Each error carries its HTTP status and renders in the seeds' shape:
``{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.storable import displayable

Loc = Sequence[str | int]


@dataclass(frozen=True)
class ErrorItem:
    """One problem, located in the request."""

    loc: Loc
    msg: str
    type: str
    # Machine-readable facts behind ``msg`` for callers inside the service (never rendered):
    # e.g. the CSV upload names each missing dynamic variable as a column.
    ctx: Mapping[str, Any] | None = field(default=None, compare=False)

    def as_dict(self) -> dict[str, Any]:
        """The seed's error-item shape, with text from the request (a key in ``loc``, a value in
        ``msg``) made encodable: a lone surrogate in it would fail the answer itself."""
        loc = [displayable(part) if isinstance(part, str) else part for part in self.loc]
        return {"loc": loc, "msg": displayable(self.msg), "type": self.type}


@dataclass
class SwitchboardError(Exception):
    """Base of every domain error; ``status_code`` is what the API answers."""

    items: list[ErrorItem] = field(default_factory=list)
    status_code: int = 500

    def __str__(self) -> str:
        return "; ".join(f"{'.'.join(map(str, i.loc))}: {i.msg}" for i in self.items)

    def detail(self) -> list[dict[str, Any]]:
        """The ``detail`` list of the error body."""
        return [item.as_dict() for item in self.items]


def _single(loc: Loc, msg: str, type_: str) -> list[ErrorItem]:
    return [ErrorItem(loc=loc, msg=msg, type=type_)]


class ValidationFailed(SwitchboardError):
    """The request is well-formed JSON but breaks a rule: 422, nothing written."""

    def __init__(self, items: list[ErrorItem]) -> None:
        super().__init__(items=items, status_code=422)

    @classmethod
    def one(cls, loc: Loc, msg: str, type_: str = "value_error") -> ValidationFailed:
        """A validation error with a single item."""
        return cls(_single(loc, msg, type_))


class NotFound(SwitchboardError):
    """No such resource in the caller's workspace (another workspace's ids answer this too)."""

    def __init__(self, loc: Loc, msg: str) -> None:
        super().__init__(items=_single(loc, msg, "not_found"), status_code=404)


class Unauthorized(SwitchboardError):
    """Missing or unknown API key."""

    def __init__(self, msg: str) -> None:
        super().__init__(
            items=_single(["header", "x-api-key"], msg, "unauthorized"), status_code=401
        )


class Forbidden(SwitchboardError):
    """A signed request whose signature does not verify."""

    def __init__(self, loc: Loc, msg: str) -> None:
        super().__init__(items=_single(loc, msg, "forbidden"), status_code=403)


class Conflict(SwitchboardError):
    """The request contradicts the resource's current state."""

    def __init__(self, loc: Loc, msg: str) -> None:
        super().__init__(items=_single(loc, msg, "conflict"), status_code=409)


class UnsafeSettings(SwitchboardError):
    """A process was asked to start in production with settings only fit for development."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(
            items=[ErrorItem(["settings"], problem, "unsafe_setting") for problem in problems],
            status_code=500,
        )

    def __str__(self) -> str:
        problems = "; ".join(item.msg for item in self.items)
        return (
            f"refusing to start with SWITCHBOARD_ENV=production: {problems}. Set them (README, "
            "Going live), or set SWITCHBOARD_ENV=dev on a development machine."
        )


class ProviderError(Exception):
    """A telephony provider refused or failed a request."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: int | None = None,
        retryable: bool = False,
        ambiguous: bool = False,
        auth_failed: bool = False,
        fenced: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        # The request was not processed (429, 5xx, connect failure): safe to send again.
        self.retryable = retryable
        # The request may have been processed (read timeout): the call may exist.
        self.ambiguous = ambiguous
        # The account's credentials were rejected: no call of this account can proceed.
        self.auth_failed = auth_failed
        # Not sent: the dial's fence (the last time its batch was seen running, plus the send
        # window) passed first. Nothing reached the provider.
        self.fenced = fenced
