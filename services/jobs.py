"""Checking a bulk job's rows before they are recorded (pure; no database, no broker).

Rows name a student by id or by e-mail; e-mails are resolved to ids in
batches through ``resolve_emails`` (the students service). A row that fails is
refused on its own, with its row number, code and reason; the rest go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

from marshmallow import Schema

from services.exceptions import ValidationFailed
from services.schemas import load

INVALID_ROW = ValidationFailed.code
STUDENT_NOT_FOUND = "STUDENT_NOT_FOUND"
EMAILS_PER_LOOKUP = 5_000

ResolveEmails = Callable[[list[str]], dict[str, int]]


class Row(NamedTuple):
    row: int
    student_id: int | None
    email: str | None
    status: str
    reason: str | None


def invalid(row: int, details: dict[str, Any]) -> list:
    """A refused row as recorded: ``[row_no, code, message, details]``."""
    return [row, INVALID_ROW, f"Row {row} is invalid.", details]


def check_rows(rows: Iterable[Any], schema: Schema, resolve_emails: ResolveEmails) -> tuple[list[list], list[list]]:
    """Validate rows given as dicts (numbered from 1) and resolve their e-mails."""
    valid, refused = [], []
    for number, raw in enumerate(rows, 1):
        try:
            fields = load(schema, raw)
        except ValidationFailed as exc:
            refused.append(invalid(number, exc.details))
            continue
        valid.append(Row(number, fields.get("student_id"), fields.get("email"), fields["status"], fields["reason"]))
    accepted, unknown = resolve(valid, resolve_emails)
    return accepted, sorted(refused + unknown)


def resolve(rows: list, resolve_emails: ResolveEmails) -> tuple[list[list], list[list]]:
    """For rows with the fields of :class:`Row`: ``[row_no, student_id, status, reason]`` for those whose student is
    known, and refusals for e-mails that belong to nobody."""
    emails = sorted({row.email.strip().lower() for row in rows if row.student_id is None and row.email})
    found: dict[str, int] = {}
    for start in range(0, len(emails), EMAILS_PER_LOOKUP):
        found.update(resolve_emails(emails[start : start + EMAILS_PER_LOOKUP]))
    accepted, refused = [], []
    for row in rows:
        student_id = row.student_id
        if student_id is None:
            email = (row.email or "").strip().lower()
            student_id = found.get(email)
            if student_id is None:
                refused.append([row.row, STUDENT_NOT_FOUND, "No student has this e-mail address.", {"email": email}])
                continue
        accepted.append([row.row, student_id, row.status, row.reason])
    return accepted, refused
