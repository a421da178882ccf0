"""Batches as CSV: submit one from an uploaded file, and export its results as a file.

The upload follows the hosted batch-calling convention: one row per recipient, a
``phone_number`` column, an optional ``id`` column, and every other column a dynamic variable.
Rows are counted as in a spreadsheet: the header is row 1, the first recipient row 2.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from sqlalchemy.orm import Session

from shared.batches import calls_repository as calls_repo
from shared.batches import repository as batches_repo
from shared.batches.submit import submit_batch
from shared.db import Transaction
from shared.errors import ErrorItem, NotFound, ValidationFailed
from shared.lifecycle.states import public_status
from shared.phone_numbers.e164 import InvalidPhoneNumber, restore_dropped_plus
from shared.schemas import SubmitBatchRequest

MAX_CSV_ROWS = 10_000
MAX_CSV_BYTES = 20 * 1024 * 1024
PHONE_COLUMN = "phone_number"
ID_COLUMN = "id"
HEADER_ROW = 1


FILE_LOC: list[str | int] = ["body", "file"]


EXPORT_COLUMNS = (
    "recipient_id",
    "phone_number",
    "status",
    "outcome",
    "attempts",
    "provider_call_sid",
    "duration_s",
    "caller_number",
    "requestMetadata",
)


def _row_loc(row: int, column: str | int) -> list[str | int]:
    return [*FILE_LOC, "row", row, column]


@dataclass(frozen=True)
class SubmitCsvForm:
    """The form fields sent beside the file."""

    call_name: str
    agent_id: str
    agent_phone_number_id: str | None = None
    scheduled_time_unix: int | None = None
    timezone: str | None = None


@dataclass
class ParsedCsv:
    """Recipients read from a file, each with the spreadsheet row it came from."""

    recipients: list[dict[str, Any]] = field(default_factory=list)
    rows: list[int] = field(default_factory=list)
    # Numbers whose dropped '+' could not be put back: row -> why. The raw text is passed on
    # (without '+' it never validates), so these rows fail with every other rule's errors.
    phone_errors: dict[int, str] = field(default_factory=dict)


def _decode(data: bytes) -> str:
    if len(data) > MAX_CSV_BYTES:
        raise ValidationFailed.one(
            FILE_LOC, f"the file is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB", "too_large"
        )
    try:
        # utf-8-sig drops the byte-order mark spreadsheets write in front of the header.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationFailed.one(
            FILE_LOC, f"the file is not UTF-8 text (byte {exc.start})", "value_error.encoding"
        ) from None


def _header(cells: list[str]) -> list[str]:
    names = [cell.strip() for cell in cells]
    errors: list[ErrorItem] = []
    seen: set[str] = set()
    for position, name in enumerate(names, start=1):
        if not name:
            errors.append(
                ErrorItem(
                    _row_loc(HEADER_ROW, position), f"column {position} has no name", "missing"
                )
            )
        elif name in seen:
            errors.append(
                ErrorItem(_row_loc(HEADER_ROW, name), f"column '{name}' is repeated", "duplicate")
            )
        seen.add(name)
    if PHONE_COLUMN not in seen:
        errors.append(
            ErrorItem(
                FILE_LOC,
                f"the header row has no '{PHONE_COLUMN}' column "
                f"(found: {', '.join(repr(n) for n in names if n) or 'none'})",
                "missing",
            )
        )
    if errors:
        raise ValidationFailed(errors)
    return names


def parse_recipients_csv(data: bytes) -> ParsedCsv:
    """Read the recipients of an uploaded CSV; a malformed file is one 422 naming rows."""
    reader = csv.reader(io.StringIO(_decode(data), newline=""))
    try:
        records = list(reader)
    except csv.Error as exc:
        raise ValidationFailed.one(
            [*FILE_LOC, "row", reader.line_num], f"not valid CSV: {exc}", "value_error.csv"
        ) from None
    header_at = next((i for i, cells in enumerate(records) if any(c.strip() for c in cells)), None)
    if header_at is None:
        raise ValidationFailed.one(FILE_LOC, "the file is empty", "missing")
    if header_at != 0:
        raise ValidationFailed.one(
            _row_loc(HEADER_ROW, PHONE_COLUMN), "row 1 must be the header row", "missing"
        )
    names = _header(records[0])
    parsed = ParsedCsv()
    errors: list[ErrorItem] = []
    for row, cells in enumerate(records[1:], start=HEADER_ROW + 1):
        if not any(cell.strip() for cell in cells):
            continue  # blank lines, and the empty rows spreadsheets export after the data
        if len(parsed.rows) == MAX_CSV_ROWS:
            raise ValidationFailed.one(
                FILE_LOC, f"the file has more than {MAX_CSV_ROWS} recipient rows", "too_long"
            )
        if len(cells) > len(names) and any(cell.strip() for cell in cells[len(names) :]):
            errors.append(
                ErrorItem(
                    _row_loc(row, len(names) + 1),
                    f"the row has {len(cells)} cells but the header names {len(names)} columns",
                    "value_error.csv",
                )
            )
            continue
        values = {name: cell.strip() for name, cell in zip(names, cells, strict=False)}
        recipient: dict[str, Any] = {}
        phone = values.pop(PHONE_COLUMN, "")
        if phone:
            try:
                recipient["phone_number"] = restore_dropped_plus(phone)
            except InvalidPhoneNumber as exc:
                recipient["phone_number"] = phone
                parsed.phone_errors[row] = str(exc)
        recipient_id = values.pop(ID_COLUMN, "")
        if recipient_id:
            recipient["id"] = recipient_id
        variables = {name: value for name, value in values.items() if value}
        if variables:
            recipient["conversation_initiation_client_data"] = {"dynamic_variables": variables}
        parsed.recipients.append(recipient)
        parsed.rows.append(row)
    if errors:
        raise ValidationFailed(errors)
    if not parsed.recipients:
        raise ValidationFailed.one(
            FILE_LOC, "the file has a header but no recipient rows", "missing"
        )
    return parsed


def _located_in_file(item: ErrorItem, rows: Sequence[int]) -> list[ErrorItem]:
    """A submit error about ``recipients[i]`` as errors about spreadsheet rows and columns."""
    loc = list(item.loc)
    if loc[:2] != ["body", "recipients"]:
        return [item]
    if len(loc) == 2:
        return [ErrorItem(FILE_LOC, item.msg, item.type)]
    index = loc[2]
    if not isinstance(index, int) or not 0 <= index < len(rows):
        return [item]
    row, rest = rows[index], loc[3:]
    if not rest:
        # The only whole-recipient rule is "needs a phone number".
        return [ErrorItem(_row_loc(row, PHONE_COLUMN), item.msg, item.type)]
    if rest[:2] == ["conversation_initiation_client_data", "dynamic_variables"]:
        if len(rest) > 2:
            return [ErrorItem(_row_loc(row, rest[2]), item.msg, item.type)]
        missing = (item.ctx or {}).get("missing") or []
        return [
            ErrorItem(
                _row_loc(row, name),
                f"no value for placeholder '{name}' used by the agent's prompt "
                "(the cell is empty or there is no such column)",
                item.type,
            )
            for name in missing
        ] or [ErrorItem(_row_loc(row, "dynamic_variables"), item.msg, item.type)]
    return [ErrorItem([*FILE_LOC, "row", row, *rest], item.msg, item.type)]


def _in_file_terms(items: Sequence[ErrorItem], parsed: ParsedCsv) -> ValidationFailed:
    located = [out for item in items for out in _located_in_file(item, parsed.rows)]
    # A number whose '+' could not be put back gets the reason, not the parser's complaint.
    phone_locs = {tuple(_row_loc(row, PHONE_COLUMN)): row for row in parsed.phone_errors}
    shown: set[int] = set()
    result: list[ErrorItem] = []
    for item in located:
        row = phone_locs.get(tuple(item.loc))
        if row is None:
            result.append(item)
        elif row not in shown:
            shown.add(row)
            result.append(ErrorItem(item.loc, parsed.phone_errors[row], "value_error.phone"))
    # Rules checked before the recipients (an unknown agent) stop the service early; the
    # file's own problems are named anyway.
    result.extend(
        ErrorItem(_row_loc(row, PHONE_COLUMN), msg, "value_error.phone")
        for row, msg in parsed.phone_errors.items()
        if row not in shown
    )
    result.sort(key=_row_of)
    return ValidationFailed(result)


def _row_of(item: ErrorItem) -> int:
    """The spreadsheet row an error is about; 0 for errors about the form (listed first)."""
    loc = list(item.loc)
    row = loc[3] if len(loc) > 3 and loc[:3] == [*FILE_LOC, "row"] else 0
    return row if isinstance(row, int) else 0


def submit_csv_batch(
    session: Session,
    workspace_id: str,
    data: bytes,
    form: SubmitCsvForm,
    idempotency_key: str | None,
) -> str:
    """Submit a batch whose recipients come from a CSV file, through ``submit_batch``.

    Every submit rule holds unchanged; errors about ``recipients[i]`` are reported against the
    file's row and column instead.
    """
    parsed = parse_recipients_csv(data)
    try:
        body = SubmitBatchRequest.model_validate(
            {
                "call_name": form.call_name,
                "agent_id": form.agent_id,
                "agent_phone_number_id": form.agent_phone_number_id or None,
                "scheduled_time_unix": form.scheduled_time_unix,
                "timezone": form.timezone or None,
                "recipients": parsed.recipients,
            }
        )
    except ValidationError as exc:
        items = [
            ErrorItem(["body", *error["loc"]], error["msg"], error["type"])
            for error in exc.errors()
        ]
        raise _in_file_terms(items, parsed) from None
    try:
        return submit_batch(session, workspace_id, body, idempotency_key)
    except ValidationFailed as exc:
        raise _in_file_terms(exc.items, parsed) from None


def _inert(text: str) -> str:
    """A client-supplied cell a spreadsheet would run as a formula, quoted so it is not."""
    return "'" + text if text[:1] in ("=", "@", "+", "-", "\t", "\r") else text


def export_batch_csv(session: Session, workspace_id: str, batch_id: str) -> str:
    """Every recipient of the batch in submission order as CSV text, or 404."""
    require_batch(session, workspace_id, batch_id)
    return "".join(batch_csv_chunks(session, batch_id))


def require_batch(session: Session, workspace_id: str, batch_id: str) -> None:
    """404 unless the workspace has this batch: checked before a streamed export starts."""
    if batches_repo.get_batch_row(session, workspace_id, batch_id) is None:
        raise NotFound(["path", "batch_id"], f"batch '{batch_id}' not found")


def stream_batch_csv(
    batch_id: str, transaction: Transaction, limit: int | None = None
) -> Iterator[str]:
    """The export as CSV text in chunks, read in a transaction of its own (a streamed
    response outlives the request's)."""
    with transaction() as session:
        yield from batch_csv_chunks(session, batch_id, limit)


def batch_csv_chunks(
    session: Session, batch_id: str, limit: int | None = None, rows_per_chunk: int = 500
) -> Iterator[str]:
    """The header, then the first ``limit`` (or every) recipients, as CSV text in chunks."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(EXPORT_COLUMNS)
    for n, r in enumerate(calls_repo.stream_recipient_rows(session, batch_id, limit), start=1):
        metadata = (
            json.dumps(r.request_metadata, separators=(",", ":"), sort_keys=True)
            if r.request_metadata
            else ""
        )
        writer.writerow(
            [
                _inert(r.recipient_id),
                r.phone_number or "",
                public_status(r.status),
                r.outcome or "",
                r.attempts,
                r.provider_call_sid or "",
                "" if r.duration_s is None else r.duration_s,
                r.caller_number or "",
                metadata,
            ]
        )
        if n % rows_per_chunk == 0:
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    yield out.getvalue()
