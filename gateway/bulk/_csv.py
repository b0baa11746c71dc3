"""A CSV file read record by record as its text arrives."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import BinaryIO

from gateway.bulk._rows import (
    _STATUSES,
    BAD_ID,
    BAD_STATUS,
    COLUMNS,
    MISSING,
    NOT_INTEGER,
    BulkRow,
    RowError,
    _email,
    _finish,
    _reason,
    _too_many,
)
from gateway.bulk._text import _texts
from services.exceptions import ValidationFailed
from services.infra.pagination import MAX_ID

# The documented shape of an upload (its OpenAPI ``pattern``): a header in one of the
# usual orders, then rows without quotes. The reader accepts more (the columns in any
# order and case, quoted cells, a BOM, blank lines); the document promises this much.
CSV_PATTERN = r'^(?:student_id|email|student_id,email),status(?:,reason)?(?:\r?\n[^"\u0000\r\n]*)*(?:\r?\n)?$'


def _csv_rows(stream: BinaryIO, max_rows: int, max_bytes: int, chunk_size: int) -> Iterator[BulkRow | RowError]:
    def bad_utf8(offset: int) -> ValidationFailed:
        return ValidationFailed("The CSV is not valid UTF-8.", {"body": [f"Invalid UTF-8 at byte {offset}."]})

    records = csv.reader(_lines(_texts(stream, chunk_size, max_bytes, bad_utf8)), strict=True)
    rows = 0
    try:
        header = next((record for record in records if not _blank(record)), None)
        if header is None:
            raise ValidationFailed("Invalid CSV header.", {"header": ["The body has no header line."]})
        index = _header(header)
        width = len(header)
        for record in records:
            if _blank(record):
                continue
            rows += 1
            if rows > max_rows:
                raise _too_many(max_rows)
            yield _csv_row(rows, record, index, width)
    except csv.Error as exc:
        raise ValidationFailed("The CSV is malformed.", {"body": [f"Row {rows + 1}: {exc}."]}) from None


def _lines(texts: Iterator[str]) -> Iterator[str]:
    """Lines with their ends (``\\n``, ``\\r\\n`` or ``\\r``), as ``csv.reader`` wants them."""
    carry = ""
    for text in texts:
        lines = io.StringIO(carry + text, newline="").readlines()
        carry = lines.pop() if lines[-1][-1] not in "\r\n" else ""
        yield from lines
    if carry:
        yield carry


def _blank(record: list[str]) -> bool:
    return not record or (len(record) == 1 and not record[0].strip())


def _header(names: list[str]) -> dict[str, int]:
    reasons = []
    index: dict[str, int] = {}
    for position, raw in enumerate(names):
        name = raw.strip().lower()
        if name not in COLUMNS:
            reasons.append(f"Unknown column: {raw!r}." if name else f"Column {position + 1} has no name.")
        elif name in index:
            reasons.append(f"Duplicated column: {name}.")
        else:
            index[name] = position
    if "status" not in index:
        reasons.append("Missing column: status.")
    if "student_id" not in index and "email" not in index:
        reasons.append("Missing column: student_id or email.")
    if reasons:
        raise ValidationFailed("Invalid CSV header.", {"header": reasons})
    return index


def _csv_row(row: int, record: list[str], index: dict[str, int], width: int) -> BulkRow | RowError:
    errors: dict[str, list[str]] = {}
    if len(record) > width:
        errors["_schema"] = [f"The row has {len(record)} cells, the header {width}."]
    cells = len(record)
    student_id = email = status = reason = None
    position = index.get("student_id")
    if position is not None and position < cells and record[position].strip():
        student_id = record[position]
        if not (student_id.isascii() and student_id.isdigit()):
            errors["student_id"] = [NOT_INTEGER]
        elif len(student_id.lstrip("0")) > 10 or not 1 <= (student_id := int(student_id.lstrip("0") or "0")) <= MAX_ID:
            errors["student_id"] = [BAD_ID]
    position = index.get("email")
    if position is not None and position < cells and record[position].strip():
        email = _email(record[position], errors)
    position = index["status"]
    if position < cells and record[position].strip():
        status = record[position]
        if status not in _STATUSES:
            errors["status"] = [BAD_STATUS]
    else:
        errors["status"] = [MISSING]
    position = index.get("reason")
    if position is not None and position < cells and record[position].strip():
        reason = _reason(record[position], errors)
    return _finish(row, student_id, email, status, reason, errors)
