"""Opaque keyset cursors: a cursor names the last row seen, never an offset, so
pages stay stable while rows are inserted."""

from __future__ import annotations

import base64
import binascii

from sqlalchemy import Select, select

from services.exceptions import ValidationFailed

MAX_LIMIT = 500
MAX_ID = 2**31 - 1  # ids are 32-bit integers in both databases
DEFAULT_LIMIT = 50


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"after:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int | None:
    if cursor in (None, ""):
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        prefix, _, value = raw.partition(":")
        if prefix != "after":
            raise ValueError(raw)
        last_id = int(value)
        if not 0 <= last_id <= MAX_ID:
            raise ValueError(raw)
        return last_id
    except (ValueError, binascii.Error, UnicodeDecodeError, TypeError):
        raise ValidationFailed("Invalid cursor.", {"cursor": ["Invalid cursor."]}) from None


def keyset(model: type, limit: int, cursor: str | None, **equal: object) -> Select:
    """``model`` rows by ascending ``id`` after ``cursor``, ``limit + 1`` of them (one more
    tells whether a next page exists), filtered on every ``column=value`` not None."""
    query = select(model).order_by(model.id).limit(limit + 1)
    after = decode_cursor(cursor)
    if after is not None:
        query = query.where(model.id > after)
    for column, value in equal.items():
        if value is not None:
            query = query.where(getattr(model, column) == value)
    return query


def page(rows: list, limit: int, key: str = "id") -> tuple[list, str | None]:
    """Split ``limit + 1`` fetched rows into a page and the next cursor."""
    items = rows[:limit]
    more = len(rows) > limit
    return items, encode_cursor(getattr(items[-1], key)) if more else None
