"""Time-ordered UUIDs (RFC 9562 version 7) for rows written in bulk.

A random ``uuid4`` primary or unique key spreads a large insert over the whole of its index: past
a few hundred thousand rows each 2,000-row chunk of a bulk job touched ~2,000 pages of an index
larger than the cache, and an upload slowed from 20 ms to over a second a chunk. A version 7 UUID
starts with the time in milliseconds, so rows written together sit together at the end of the
index. Within one millisecond the 12 bits after the version count up (RFC 9562's method 1), and
the rest is random: ids made by one process sort in the order they were made.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

_lock = threading.Lock()
_last = [0, 0]  # the last id's millisecond and counter


def uuid7() -> uuid.UUID:
    return uuid.UUID(int=_values(1)[0])


def uuid7_texts(count: int) -> list[str]:
    """``count`` ids at once, as the text a string column holds (a job's chunk of rows: one lock,
    one read of the random source, no ``UUID`` objects)."""
    return [text(value) for value in _values(count)]


def stamps(count: int) -> list[tuple[int, int]]:
    """The next ``count`` (millisecond, counter) pairs of this process: each pair differs from every
    other this process has made, and they sort in the order they were made (version 7's first 64
    bits, less the version)."""
    made = []
    now = time.time_ns() // 1_000_000  # the batch's millisecond: its ids count on from there
    with _lock:
        millis, counter = _last
        for _ in range(count):
            if now <= millis:  # the same millisecond (or the clock stepped back): count on
                counter += 1
                if counter > 0xFFF:  # 4,096 ids in one millisecond: borrow the next one
                    millis, counter = millis + 1, 0
            else:
                millis, counter = now, 0
            made.append((millis, counter))
        _last[0], _last[1] = millis, counter
    return made


def version7(millis: int, counter: int, rest: int) -> int:
    """A version 7 UUID as an integer: ``millis`` (48 bits), ``counter`` (12), ``rest`` (62)."""
    return (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | counter << 64 | 0b10 << 62 | rest & ((1 << 62) - 1)


def text(value: int) -> str:
    """A UUID's integer as its text, without a ``UUID`` object."""
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _values(count: int) -> list[int]:
    """The next ``count`` ids of this process, as integers."""
    random = os.urandom(8 * count)
    return [
        version7(millis, counter, int.from_bytes(random[8 * n : 8 * n + 8], "big"))
        for n, (millis, counter) in enumerate(stamps(count))
    ]
