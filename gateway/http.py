"""Reading requests: content type, size limit, JSON, query strings, headers."""

from __future__ import annotations

import json
from typing import Any

from werkzeug.wrappers import Request

from gateway.exceptions import MalformedJson, PayloadTooLarge, UnsupportedMediaType
from services.exceptions import ValidationFailed
from services.schemas import load

# what reading a request body and validating it may raise
BODY_ERRORS = (MalformedJson, PayloadTooLarge, UnsupportedMediaType, ValidationFailed)


def read_json(request: Request, max_bytes: int, required: bool = True) -> Any:
    """The JSON body, after checking its size and type (before reading it all)."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise _too_large(max_bytes)
    if request.mimetype != "application/json":
        if not required and not length and not request.headers.get("Transfer-Encoding"):
            return {}
        raise UnsupportedMediaType("Send the body as application/json.", {"content_type": request.content_type or ""})
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise _too_large(max_bytes)
    if not raw.strip() and not required:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise MalformedJson("The body is not valid JSON.", {"reason": str(exc)}) from None


def _too_large(max_bytes: int) -> PayloadTooLarge:
    return PayloadTooLarge(f"The body exceeds {max_bytes} bytes.", {"max_bytes": max_bytes})


def read_query(request: Request, schema: Any) -> dict:
    """Query parameters validated by ``schema`` (422 with per-field details)."""
    raw = {key: request.args.get(key) for key in request.args}
    return load(schema, raw)


def if_match_version(request: Request) -> int | None:
    """``If-Match: 3`` or ``If-Match: "3"`` → 3."""
    value = request.headers.get("If-Match")
    if value is None:
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    if not (tag.isascii() and tag.isdigit()):
        raise ValidationFailed("Invalid If-Match header.", {"If-Match": ["Must be a version number."]})
    return int(tag)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > 200:
        raise ValidationFailed("Invalid Idempotency-Key header.", {"Idempotency-Key": ["Must be 1 to 200 characters."]})
    return key


def actor(request: Request) -> str:
    """Who asks (``X-Actor``), ``http`` unless told."""
    return (request.headers.get("X-Actor") or "http")[:200]
