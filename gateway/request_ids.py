"""Status request ids the gateway issues, signed so that it recognises them.

The gateway answers ``202`` as soon as a request is durably queued, before the
status service has recorded it. An id it issued must never be answered ``404``,
so ids carry a MAC: ``GET /status-requests/{id}`` for a signed id the status
service does not know yet reports the request as pending (still queued).

With an idempotency key the id is derived from (student, key): a client that
repeats a request gets the same id back (a version 4 UUID: ten bytes of the HMAC,
six of the MAC).

Without one the id is a version 7 UUID, in the order it was issued: 48 bits of
milliseconds and a 12-bit counter (``services.infra.ids.stamps``: never twice the
same pair in one process), a 30-bit tag drawn when the process starts (another
gateway process's ids differ by it), and a 32-bit MAC. Random ids spread the
status service's inserts over every page of its ``id`` indexes (requests and
history: 65-80 µs a recorded request against 30 on a table of 100,000, and worse
as it grows); these land together at the end. A forged id is taken for issued
with a chance of 2^-32 a try, and then only reads as ``pending``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid

from services.infra import ids

_MAC_BYTES = 6  # of a version 4 id (with an idempotency key)
_ORDERED_MAC_BYTES = 4  # of a version 7 id
_TAG_BITS = 30


def _new_tag() -> None:
    global _tag
    _tag = secrets.randbits(_TAG_BITS)


_new_tag()
os.register_at_fork(after_in_child=_new_tag)  # a forked process is another issuer


def _mac(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()[:_MAC_BYTES]


def _body(seed: bytes) -> bytes:
    body = bytearray(seed[:10])
    body[6] = (body[6] & 0x0F) | 0x40  # UUID version 4
    body[8] = (body[8] & 0x3F) | 0x80  # RFC 4122 variant
    return bytes(body)


def issue(secret: str, student_id: int, idempotency_key: str | None = None) -> str:
    if idempotency_key is None:
        [(millis, counter)] = ids.stamps(1)
        body = (ids.version7(millis, counter, _tag << 32) >> 32).to_bytes(12, "big")
        return ids.text(int.from_bytes(body + _mac(secret, body)[:_ORDERED_MAC_BYTES], "big"))
    seed = hmac.new(secret.encode(), f"{student_id}\x00{idempotency_key}".encode(), hashlib.sha256).digest()
    body = _body(seed)
    return str(uuid.UUID(bytes=body + _mac(secret, body)))


def is_issued(secret: str, request_id: str) -> bool:
    try:
        raw = uuid.UUID(request_id).bytes
    except (ValueError, AttributeError, TypeError):
        return False
    if raw[6] >> 4 == 7:
        return hmac.compare_digest(raw[12:], _mac(secret, raw[:12])[:_ORDERED_MAC_BYTES])
    return hmac.compare_digest(raw[10:], _mac(secret, raw[:10]))
