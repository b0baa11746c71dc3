"""API keys: their format, their checksum, their keyed hash, and the scopes they carry.

A key reads ``msk_<id>_<secret>_<crc>``:

- ``msk_`` makes a leaked key easy to find (secret scanners, ``grep``);
- ``<id>`` (12 characters ``[a-z0-9]``) names the key in lists, audits and ``revoke``;
- ``<secret>`` (32 base62 characters, about 190 bits) is the part nobody stores;
- ``<crc>`` (6 base62 characters: CRC-32 of everything before it) catches a mistyped
  or truncated key without looking anything up.

Only ``digest(secret_key, id, secret)`` (HMAC-SHA256 keyed with ``API_KEY_SECRET``) is
stored; a stolen database cannot be turned back into keys, nor checked offline
without that secret. :func:`matches` compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
import zlib
from collections.abc import Iterable
from typing import NamedTuple

PREFIX = "msk"
ID_LENGTH = 12
SECRET_LENGTH = 32
CRC_LENGTH = 6
MAX_NAME = 200

_BASE62 = string.digits + string.ascii_uppercase + string.ascii_lowercase
_ID_ALPHABET = string.digits + string.ascii_lowercase
_KEY = re.compile(rf"{PREFIX}_([a-z0-9]{{{ID_LENGTH}}})_([0-9A-Za-z]{{{SECRET_LENGTH}}})_([0-9A-Za-z]{{{CRC_LENGTH}}})")
KEY_ID = re.compile(rf"[a-z0-9]{{{ID_LENGTH}}}")

ADMIN = "admin"
# what each scope allows (README: "Keys and scopes")
SCOPES: dict[str, str] = {
    "students:read": "read students and their certificates",
    "students:write": "create, change and delete students",
    "status:read": "read status requests, histories and bulk jobs",
    "status:write": "ask for status changes and course completions",
    "jobs:write": "upload bulk status jobs",
    "certificates:revoke": "revoke certificates",
    "ops:read": "read the audit trail and operational state",
    "ops:write": "replay and purge dead letters, resend mail",
    "keys:admin": "create, list and revoke API keys",
    ADMIN: "every scope above",
}


class ParsedKey(NamedTuple):
    key_id: str
    secret: str


def _base62(number: int, width: int) -> str:
    digits = []
    for _ in range(width):
        number, digit = divmod(number, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


def _checksum(body: str) -> str:
    return _base62(zlib.crc32(body.encode()), CRC_LENGTH)


def new_key() -> tuple[str, str, str]:
    """A fresh ``(key_id, secret, key)``."""
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(ID_LENGTH))
    secret = "".join(secrets.choice(_BASE62) for _ in range(SECRET_LENGTH))
    return key_id, secret, assemble(key_id, secret)


def assemble(key_id: str, secret: str) -> str:
    """The key that carries ``key_id`` and ``secret``, with its checksum."""
    body = f"{PREFIX}_{key_id}_{secret}"
    return f"{body}_{_checksum(body)}"


def parse(key: str) -> ParsedKey | None:
    """The key's id and secret, or None if it is not a well-formed key with a valid checksum."""
    match = _KEY.fullmatch(key)
    if match is None:
        return None
    key_id, secret, crc = match.groups()
    if not hmac.compare_digest(crc, _checksum(f"{PREFIX}_{key_id}_{secret}")):
        return None
    return ParsedKey(key_id, secret)


def digest(secret_key: str, key_id: str, secret: str) -> str:
    """What is stored of a key: HMAC-SHA256 of its id and secret, keyed with ``API_KEY_SECRET``."""
    return hmac.new(secret_key.encode(), f"{key_id}:{secret}".encode(), hashlib.sha256).hexdigest()


def matches(secret_key: str, parsed: ParsedKey, stored_digest: str) -> bool:
    return hmac.compare_digest(digest(secret_key, parsed.key_id, parsed.secret), stored_digest)


def check_scopes(scopes: Iterable[str]) -> list[str]:
    """``scopes`` without repeats, in a stable order; ValueError naming any unknown one."""
    wanted = [scope.strip() for scope in scopes if scope.strip()]
    unknown = sorted(set(wanted) - set(SCOPES))
    if unknown:
        raise ValueError(f"unknown scope(s) {', '.join(unknown)}; known: {', '.join(SCOPES)}")
    if not wanted:
        raise ValueError(f"give at least one scope; known: {', '.join(SCOPES)}")
    return [scope for scope in SCOPES if scope in wanted]


def allows(granted: frozenset[str], required: str) -> bool:
    return required in granted or ADMIN in granted
