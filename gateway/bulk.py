"""Reading the body of ``POST /status-requests/bulk`` one row at a time.

The body is a JSON array of objects or a CSV file; it is read from the stream in
chunks and each row is validated as soon as it is complete, so neither the
whole body nor all the rows are ever held at once::

    >>> import io
    >>> body = io.BytesIO(b"student_id,status\\n7,active\\n8,retired\\n")
    >>> [type(item).__name__ for item in read_rows(body, "text/csv", max_rows=10, max_bytes=1000)]
    ['BulkRow', 'RowError']

An invalid row is yielded as a :class:`RowError` and reading goes on; a body that
cannot be read as a whole (wrong type, broken JSON, bad CSV header, too large)
raises, after the rows before the fault have been yielded.

The rules are those of ``services.schemas`` (``StatusChangeSchema`` and the
e-mail of ``StudentCreateSchema``), checked by hand: a marshmallow load per
row is too slow for a file of 100,000 rows.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

from marshmallow import ValidationError, validate

from gateway.exceptions import MalformedJson, PayloadTooLarge, UnsupportedMediaType
from services.exceptions import ServiceError, ValidationFailed
from services.infra.pagination import MAX_ID
from services.lifecycle import STATUSES

__all__ = ["BulkRow", "RowError", "read_rows"]

JSON = "application/json"
CSV = "text/csv"
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
_EMAIL = validate.Email()
_JSON_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
_NUMBERS = (int, float)
_NUMBER_TAIL = re.compile(r"[0-9.eE+-]+")
# a syntax error this close to the end of the buffer may only be a token cut by a chunk edge
# (a literal such as "-Infinity" or a "\uXXXX" escape): read on before deciding
_CUT_TOKEN = 16


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


def read_rows(
    stream: BinaryIO, mimetype: str, *, max_rows: int, max_bytes: int, chunk_size: int = 65536
) -> Iterator[BulkRow | RowError]:
    """The rows of a bulk upload, in order, one :class:`BulkRow` or :class:`RowError` each.

    ``stream`` needs only ``read(n)``. An unsupported ``mimetype`` raises at once;
    every other whole-body fault raises while iterating.
    """
    if mimetype == JSON:
        return _json_rows(stream, max_rows, max_bytes, chunk_size)
    if mimetype == CSV:
        return _csv_rows(stream, max_rows, max_bytes, chunk_size)
    raise UnsupportedMediaType("Send the rows as application/json or text/csv.", {"content_type": mimetype})


# --- reading ----------------------------------------------------------------


def _texts(stream: BinaryIO, chunk_size: int, max_bytes: int, bad_utf8: Callable[[int], ServiceError]) -> Iterator[str]:
    """The body decoded chunk by chunk (a leading BOM dropped); the valid text before
    an invalid byte is yielded before ``bad_utf8(offset)`` is raised."""
    decoder = codecs.getincrementaldecoder("utf-8-sig")()
    total = 0
    while True:
        chunk = stream.read(min(chunk_size, max_bytes + 1 - total))
        total += len(chunk)
        if total > max_bytes:
            raise PayloadTooLarge(f"The body exceeds {max_bytes} bytes.", {"max_bytes": max_bytes})
        try:
            text = decoder.decode(chunk, not chunk)
        except UnicodeDecodeError as exc:
            # exc.object is the tail of the bytes read so far (pending bytes + this chunk)
            valid = exc.object[: exc.start].decode("utf-8")
            if valid:
                yield valid
            raise bad_utf8(total - len(exc.object) + exc.start) from None
        if text:
            yield text
        if not chunk:
            return


def _too_many(max_rows: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"More than {max_rows} rows.", {"max_rows": max_rows})


# --- JSON -------------------------------------------------------------------

_START, _FIRST, _VALUE, _AFTER, _END = range(5)


def _json_rows(stream: BinaryIO, max_rows: int, max_bytes: int, chunk_size: int) -> Iterator[BulkRow | RowError]:
    rows = 0

    def malformed(reason: str) -> MalformedJson:
        return MalformedJson("The body is not valid JSON.", {"reason": reason, "row": rows + 1})

    texts = _texts(stream, chunk_size, max_bytes, lambda offset: malformed(f"Invalid UTF-8 at byte {offset}."))
    buf, pos, eof = "", 0, False
    broken = ""  # why the body stops being readable after buf (invalid UTF-8)
    state = _START
    need = 0  # characters to read before trying again (0: none)
    while True:
        if need:
            if broken:
                raise malformed(broken)
            # read at least as much as is pending, so a long element is not parsed over and over
            parts = [buf[pos:]]
            added = 0
            while added < need:
                try:
                    text = next(texts, None)
                except MalformedJson as exc:  # raised again once the text before the fault is used up
                    broken = exc.details["reason"]
                    break
                if text is None:
                    eof = True
                    break
                parts.append(text)
                added += len(text)
            buf, pos, need = "".join(parts), 0, 0
        pos = _JSON_WS.match(buf, pos).end()
        if pos == len(buf):
            if not eof:
                need = 1
                continue
            if state == _END:
                return
            raise malformed("The body is empty." if state == _START else "The array is not closed.")
        char = buf[pos]
        if state == _START:
            if char != "[":
                raise malformed("The body is not a JSON array.")
            pos += 1
            state = _FIRST
        elif state == _AFTER or (state == _FIRST and char == "]"):
            if char == "]":
                state = _END
            elif char != ",":
                raise malformed("Expecting ',' or ']' after a row.")
            else:
                state = _VALUE
            pos += 1
        elif state == _END:
            raise malformed("Extra data after the array.")
        else:
            try:
                value, end = _DECODER.raw_decode(buf, pos)
            except json.JSONDecodeError as exc:
                cut = exc.msg.startswith("Unterminated string") or exc.pos >= len(buf) - _CUT_TOKEN
                if cut and not eof:
                    need = max(len(buf) - pos, 1)
                    continue
                raise malformed(exc.msg) from None
            except RecursionError:
                raise malformed("Nested too deeply.") from None
            if not eof and (end == len(buf) or (type(value) in _NUMBERS and _NUMBER_TAIL.fullmatch(buf, end))):
                # a number may go on in the next chunk ("1" then "2", "1." then "5", "1e" then "3")
                need = max(len(buf) - pos, 1)
                continue
            rows += 1
            if rows > max_rows:
                raise _too_many(max_rows)
            yield _json_row(rows, value)
            pos = end
            state = _AFTER


def _json_row(row: int, data: Any) -> BulkRow | RowError:
    if not isinstance(data, dict):
        return _row_error(row, {"_schema": [NOT_OBJECT]})
    errors: dict[str, list[str]] = {}
    student_id = data.get("student_id")
    if student_id is not None and (type(student_id) is not int or not 1 <= student_id <= MAX_ID):
        errors["student_id"] = [BAD_ID if type(student_id) is int else NOT_INTEGER]
    email = data.get("email")
    if isinstance(email, str):
        email = _email(email, errors)
    elif email is not None:
        errors["email"] = [BAD_EMAIL]
    if "status" not in data:
        errors["status"] = [MISSING]
    status = data.get("status")
    if status is None:
        errors.setdefault("status", [NOT_NULL])
    elif not isinstance(status, str):
        errors["status"] = [NOT_STRING]
    elif status not in _STATUSES:
        errors["status"] = [BAD_STATUS]
    reason = data.get("reason")
    if reason is not None:
        if not isinstance(reason, str):
            errors["reason"] = [NOT_STRING]
        elif len(reason) > MAX_REASON:
            errors["reason"] = [LONG_REASON]
    for key in data:
        if key not in COLUMNS:
            errors[key] = [UNKNOWN]
    return _finish(row, student_id, email, status, reason, errors)


# --- CSV --------------------------------------------------------------------


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
        elif len(student_id.lstrip("0")) > 10 or not 1 <= (student_id := int(student_id)) <= MAX_ID:
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
        reason = record[position]
        if len(reason) > MAX_REASON:
            errors["reason"] = [LONG_REASON]
    return _finish(row, student_id, email, status, reason, errors)


# --- both -------------------------------------------------------------------


def _email(value: str, errors: dict[str, list[str]]) -> str:
    value = value.strip()
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
