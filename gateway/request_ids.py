"""Status request ids the gateway issues, signed so that it recognises them.

The gateway answers ``202`` as soon as a request is durably queued, before the
status service has recorded it. An id it issued must never be answered ``404``,
so ids carry a MAC: ``GET /status-requests/{id}`` for a signed id the status
service does not know yet reports the request as pending (still queued).

With an idempotency key the id is derived from (student, key): a client that
repeats a request gets the same id back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid

_MAC_BYTES = 6


def _mac(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()[:_MAC_BYTES]


def _body(seed: bytes) -> bytes:
    body = bytearray(seed[:10])
    body[6] = (body[6] & 0x0F) | 0x40  # UUID version 4
    body[8] = (body[8] & 0x3F) | 0x80  # RFC 4122 variant
    return bytes(body)


def issue(secret: str, student_id: int, idempotency_key: str | None = None) -> str:
    if idempotency_key is None:
        seed = secrets.token_bytes(10)
    else:
        seed = hmac.new(secret.encode(), f"{student_id}\x00{idempotency_key}".encode(), hashlib.sha256).digest()
    body = _body(seed)
    return str(uuid.UUID(bytes=body + _mac(secret, body)))


def is_issued(secret: str, request_id: str) -> bool:
    try:
        raw = uuid.UUID(request_id).bytes
    except (ValueError, AttributeError, TypeError):
        return False
    return hmac.compare_digest(raw[10:], _mac(secret, raw[:10]))
