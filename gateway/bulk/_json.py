"""A JSON array read element by element as its text arrives."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any, BinaryIO

from gateway.bulk._rows import (
    _STATUSES,
    BAD_EMAIL,
    BAD_ID,
    BAD_STATUS,
    COLUMNS,
    MISSING,
    NOT_INTEGER,
    NOT_NULL,
    NOT_OBJECT,
    NOT_STRING,
    UNKNOWN,
    BulkRow,
    RowError,
    _email,
    _finish,
    _reason,
    _row_error,
    _too_many,
)
from gateway.bulk._text import _texts
from gateway.exceptions import MalformedJson
from services.infra.pagination import MAX_ID


class _TooManyDigits:
    """An integer longer than Python converts (``sys.get_int_max_str_digits()``): a bad
    value in its row, as any other, rather than an uncaught ValueError (a 500) that ends the upload."""


_TOO_MANY_DIGITS = _TooManyDigits()


def _int_or_too_many_digits(digits: str) -> int | _TooManyDigits:
    try:
        return int(digits)
    except ValueError:
        return _TOO_MANY_DIGITS


_JSON_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()
# only for the rare element the fast decoder cannot convert: a Python call per integer is slower
_LENIENT_DECODER = json.JSONDecoder(parse_int=_int_or_too_many_digits)
_NUMBERS = (int, float, _TooManyDigits)
_NUMBER_TAIL = re.compile(r"[0-9.eE+-]+")
# a syntax error this close to the end of the buffer may only be a token cut by a chunk edge
# (a literal such as "-Infinity" or a "\uXXXX" escape): read on before deciding
_CUT_TOKEN = 16

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
                value, end = _decode(buf, pos)
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


def _decode(buf: str, pos: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(buf, pos)
    except json.JSONDecodeError:  # a ValueError too, but one the caller handles
        raise
    except ValueError:  # an integer with too many digits to convert
        return _LENIENT_DECODER.raw_decode(buf, pos)


def _json_row(row: int, data: Any) -> BulkRow | RowError:
    if not isinstance(data, dict):
        return _row_error(row, {"_schema": [NOT_OBJECT]})
    errors: dict[str, list[str]] = {}
    student_id = data.get("student_id")
    if student_id is not None and (type(student_id) is not int or not 1 <= student_id <= MAX_ID):
        errors["student_id"] = [BAD_ID if type(student_id) in (int, _TooManyDigits) else NOT_INTEGER]
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
        else:
            reason = _reason(reason, errors)
    for key in data:
        if key not in COLUMNS:
            errors[key] = [UNKNOWN]
    return _finish(row, student_id, email, status, reason, errors)
