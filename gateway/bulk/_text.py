"""The body's bytes as text: UTF-8 decoded chunk by chunk, within ``max_bytes``."""

from __future__ import annotations

import codecs
from collections.abc import Callable, Iterator
from typing import BinaryIO

from gateway.exceptions import PayloadTooLarge
from services.exceptions import ServiceError


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
