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

from collections.abc import Iterator
from typing import BinaryIO

from gateway.bulk._csv import CSV_PATTERN, _csv_rows
from gateway.bulk._json import _json_rows
from gateway.bulk._rows import BulkRow, RowError
from gateway.exceptions import UnsupportedMediaType

__all__ = ["CSV", "CSV_PATTERN", "JSON", "BulkRow", "RowError", "read_rows"]

JSON = "application/json"
CSV = "text/csv"


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
