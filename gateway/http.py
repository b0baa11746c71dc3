"""Reading requests: content type, size limit, JSON, query strings, headers."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

from marshmallow import ValidationError, fields
from marshmallow.validate import Length
from werkzeug.wrappers import Request

from gateway.exceptions import MalformedJson, PayloadTooLarge, UnsupportedMediaType
from services.exceptions import ValidationFailed
from services.fields import FullMatch
from services.schemas import ACTOR, IDEMPOTENCY_KEY, load

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


class Header(NamedTuple):
    """A request header a route reads: its rule (a marshmallow field, also its schema
    in the OpenAPI document) and what it means."""

    name: str
    field: fields.Field
    description: str


# visible ASCII, spaces inside: what RFC 9110 asks a sender to put in a header
VISIBLE = FullMatch(r"^(?:[!-~](?:[ -~]*[!-~])?)?$", error="Must be visible ASCII characters and spaces.")

IF_MATCH = Header(
    "If-Match",
    fields.String(
        validate=FullMatch(
            r'^(?:(?:W/)?"[0-9]{1,10}(?:\.[0-9]{1,10})?"|[0-9]{1,10})$', error="Must be a version number."
        )
    ),
    'The version last read: its ETag (`"3.2"`: version 3, status version 2), or the version alone (`"3"`, `3`); '
    "a stale version is answered 412 (a change of status alone does not make it stale).",
)
IDEMPOTENCY_KEY_HEADER = Header(
    "Idempotency-Key",
    fields.String(
        validate=[Length(min=1, max=IDEMPOTENCY_KEY, error=f"Must be 1 to {IDEMPOTENCY_KEY} characters."), VISIBLE]
    ),
    "Repeating a request with the same key returns the same request, never a second change.",
)
ACTOR_HEADER = Header(
    "X-Actor",
    fields.String(validate=[Length(max=ACTOR), VISIBLE]),
    "On whose behalf the key's holder asks (e.g. a person's login in the calling app): recorded next to "
    "the key's name, which is the actor.",
)


def _header(request: Request, header: Header) -> str | None:
    """The header's value (the spaces around it are not part of it), checked: 422 if it breaks its rule."""
    value = request.headers.get(header.name)
    if value is None:
        return None
    try:
        return header.field.deserialize(value.strip(" \t"))
    except ValidationError as exc:
        raise ValidationFailed(f"Invalid {header.name} header.", {header.name: exc.messages}) from None


def if_match_version(request: Request) -> int | None:
    """``If-Match: "3.2"``, ``"3"``, ``W/"3"`` or ``3`` → 3."""
    tag = _header(request, IF_MATCH)
    return None if tag is None else int(tag.removeprefix("W/").strip('"').partition(".")[0])


def idempotency_key(request: Request) -> str | None:
    return _header(request, IDEMPOTENCY_KEY_HEADER)


class Actor(NamedTuple):
    """Who asks: the API key's name, and the ``X-Actor`` it asks on behalf of (if any)."""

    name: str
    on_behalf_of: str | None


def actor(request: Request) -> Actor:
    """The request's key name (the gateway checked the key before the route ran) and ``X-Actor``."""
    return Actor(request.principal.name, _header(request, ACTOR_HEADER) or None)
