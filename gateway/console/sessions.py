"""Console sessions and CSRF tokens: signed, stateless, tied to an API key.

Signing in with an API key gives a session cookie that names the key, an expiry and a random
nonce, signed with a key derived from ``API_KEY_SECRET`` (HMAC-SHA256)::

    v1.<key id>.<expires, epoch seconds>.<nonce>.<signature>

Nothing is stored: each request checks the signature and the expiry, then asks the gateway's
key cache for the key, so revoking or expiring the key ends all its sessions within
``API_KEY_REFRESH_SECONDS``, and its scopes are always the key's current ones. Signing out
deletes the cookie.

Every form and state-changing call carries a CSRF token bound to the session (an HMAC of its
nonce): a page can only be posted from a page the same session was served. The sign-in form,
before any session exists, carries one bound to a short-lived pre-session cookie instead
(double submit).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from typing import NamedTuple

COOKIE = "mensageria_console"
LOGIN_COOKIE = "mensageria_console_login"
VERSION = "v1"
_NONCE = re.compile(r"[A-Za-z0-9_-]{22}")
_KEY_ID = re.compile(r"[a-z0-9]{12}")
LOGIN_SECONDS = 3600  # how long a sign-in form may stay open


class Session(NamedTuple):
    key_id: str
    expires_at: int
    nonce: str


def _signing_key(api_key_secret: str) -> bytes:
    return hmac.new(api_key_secret.encode(), b"mensageria console sessions", hashlib.sha256).digest()


def _mac(key: bytes, text: str) -> str:
    return base64.urlsafe_b64encode(hmac.new(key, text.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()


def new_nonce() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode()


def issue(api_key_secret: str, key_id: str, lifetime: float, now: float | None = None) -> tuple[str, Session]:
    """A new session's cookie value, and the session."""
    session = Session(key_id, int((now or time.time()) + lifetime), new_nonce())
    body = f"{VERSION}.{session.key_id}.{session.expires_at}.{session.nonce}"
    return f"{body}.{_mac(_signing_key(api_key_secret), body)}", session


def read(api_key_secret: str, value: str | None, now: float | None = None) -> Session | None:
    """The session a cookie value names, or None (absent, malformed, forged or expired)."""
    if not value or len(value) > 200:
        return None
    parts = value.split(".")
    if len(parts) != 5 or parts[0] != VERSION:
        return None
    _, key_id, expires, nonce, signature = parts
    if not (_KEY_ID.fullmatch(key_id) and expires.isdigit() and len(expires) <= 12 and _NONCE.fullmatch(nonce)):
        return None
    body = f"{VERSION}.{key_id}.{expires}.{nonce}"
    if not hmac.compare_digest(signature, _mac(_signing_key(api_key_secret), body)):
        return None
    if int(expires) <= (now or time.time()):
        return None
    return Session(key_id, int(expires), nonce)


def csrf_token(api_key_secret: str, nonce: str) -> str:
    """The CSRF token of the session (or sign-in form) whose nonce is ``nonce``."""
    return _mac(_signing_key(api_key_secret), f"csrf.{nonce}")


def csrf_ok(api_key_secret: str, nonce: str | None, token: str | None) -> bool:
    if not nonce or not token or len(token) > 100:
        return False
    return hmac.compare_digest(token, csrf_token(api_key_secret, nonce))


def login_nonce(value: str | None) -> str | None:
    """The pre-session nonce of a sign-in form's cookie, if well formed."""
    return value if value and _NONCE.fullmatch(value) else None
