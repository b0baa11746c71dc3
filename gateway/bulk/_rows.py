"""A bulk row, its field messages and the checks the JSON and CSV readers share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from marshmallow import ValidationError

from gateway.exceptions import PayloadTooLarge
from services.fields import FREE_TEXT, SPACES, EmailCheck, Printable
from services.infra.pagination import MAX_ID
from services.lifecycle import STATUSES

COLUMNS = ("student_id", "email", "status", "reason")
MAX_EMAIL = 320  # as StudentCreateSchema
MAX_REASON = 1000  # as StatusChangeBodySchema

MISSING = "Missing data for required field."
NOT_NULL = "Field may not be null."
NOT_STRING = "Not a valid string."
NOT_INTEGER = "Not a valid integer."
BAD_ID = f"Must be an integer from 1 to {MAX_ID}."
BAD_EMAIL = "Not a valid email address."
LONG_EMAIL = f"Longer than maximum length {MAX_EMAIL}."
BAD_STATUS = f"Must be one of: {', '.join(STATUSES)}."
LONG_REASON = f"Longer than maximum length {MAX_REASON}."
NO_ID = "Provide student_id or email."
BOTH_IDS = "Provide only one of student_id and email."
NOT_OBJECT = "Expected an object."
UNKNOWN = "Unknown field."

_STATUSES = frozenset(STATUSES)
_EMAIL = EmailCheck()
_FREE_TEXT = Printable(FREE_TEXT)


@dataclass(frozen=True, slots=True)
class BulkRow:
    row: int  # 1-based data row number (CSV header and blank lines not counted)
    student_id: int | None
    email: str | None  # stripped, lower-cased
    status: str
    reason: str | None


@dataclass(frozen=True, slots=True)
class RowError:
    row: int
    code: str  # "VALIDATION_FAILED"
    message: str  # "Row 12 is invalid."
    details: dict  # per field: {"status": ["Must be one of: ..."]}


def _too_many(max_rows: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"More than {max_rows} rows.", {"max_rows": max_rows})


def _email(value: str, errors: dict[str, list[str]]) -> str:
    value = value.strip(SPACES)
    messages = []
    try:
        _EMAIL(value)
    except ValidationError:
        messages.append(BAD_EMAIL)
    if len(value) > MAX_EMAIL:
        messages.append(LONG_EMAIL)
    if messages:
        errors["email"] = messages
    return value.lower()


def _reason(value: str, errors: dict[str, list[str]]) -> str:
    messages = [LONG_REASON] if len(value) > MAX_REASON else []
    try:
        _FREE_TEXT(value)
    except ValidationError as exc:
        messages.extend(exc.messages)
    if messages:
        errors["reason"] = messages
    return value


def _finish(row: int, student_id: Any, email: Any, status: Any, reason: Any, errors: dict) -> BulkRow | RowError:
    if student_id is None and email is None:
        errors["student_id"], errors["email"] = [NO_ID], [NO_ID]
    elif student_id is not None and email is not None:
        errors.setdefault("student_id", []).append(BOTH_IDS)
        errors.setdefault("email", []).append(BOTH_IDS)
    if errors:
        return _row_error(row, errors)
    return BulkRow(row, student_id, email, status, reason)


def _row_error(row: int, details: dict) -> RowError:
    return RowError(row, "VALIDATION_FAILED", f"Row {row} is invalid.", details)
