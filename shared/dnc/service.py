"""The per-workspace do-not-call list."""

from __future__ import annotations

from sqlalchemy.orm import Session

from shared.dnc import repository as repo
from shared.errors import ErrorItem, NotFound, ValidationFailed
from shared.phone_numbers.e164 import InvalidPhoneNumber, normalize_e164
from shared.timestamps import unix


def _normalized(numbers: list[str], loc_prefix: list[str | int]) -> list[str]:
    """E.164 forms of ``numbers``; one 422 naming every invalid one by index."""
    result, errors = [], []
    for index, raw in enumerate(numbers):
        try:
            result.append(normalize_e164(raw))
        except InvalidPhoneNumber as exc:
            errors.append(ErrorItem([*loc_prefix, index], str(exc), "value_error.phone"))
    if errors:
        raise ValidationFailed(errors)
    return result


def add_numbers(session: Session, workspace_id: str, numbers: list[str]) -> int:
    """List numbers (all or none: one invalid number rejects the request); how many were new."""
    return repo.add_numbers(session, workspace_id, _normalized(numbers, ["body", "phone_numbers"]))


def add_number(session: Session, workspace_id: str, number: str) -> tuple[str, int]:
    """List one number; its E.164 form and when it was listed (unix time)."""
    try:
        e164 = normalize_e164(number)
    except InvalidPhoneNumber as exc:
        raise ValidationFailed.one(["body", "phone_number"], str(exc)) from exc
    repo.add_numbers(session, workspace_id, [e164])
    entry = repo.list_numbers(session, workspace_id, 1, None, exactly=e164)[0]
    return e164, unix(entry.created_at)


def remove_number(session: Session, workspace_id: str, number: str) -> None:
    """Take a number off the list, or 404."""
    try:
        e164 = normalize_e164(number)
    except InvalidPhoneNumber as exc:
        raise ValidationFailed.one(["path", "phone_number"], str(exc)) from exc
    if not repo.remove_number(session, workspace_id, e164):
        raise NotFound(["path", "phone_number"], f"{e164} is not on the do-not-call list")


def list_numbers(
    session: Session, workspace_id: str, limit: int, cursor: str | None
) -> tuple[list[tuple[str, int]], bool]:
    """One page of (number, listed-at unix time), in number order, and whether more follow."""
    rows = repo.list_numbers(session, workspace_id, limit + 1, cursor)
    page = [(r.phone_number, unix(r.created_at)) for r in rows[:limit]]
    return page, len(rows) > limit
