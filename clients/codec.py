"""JSON bodies exactly as nameko (kombu's ``json`` serializer) writes and reads them.

Plain JSON for plain values; the few types kombu knows travel in an envelope
``{"__type__": ..., "__value__": ...}``, so a ``datetime`` sent from here
arrives in a Nameko worker as a ``datetime``, and back.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

CONTENT_TYPE = "application/json"
CONTENT_ENCODING = "utf-8"

# (type, marker, encode, decode) in kombu's order: datetime before date
_TYPES: tuple[tuple[type, str, Callable[[Any], Any], Callable[[Any], Any]], ...] = (
    (datetime, "datetime", datetime.isoformat, datetime.fromisoformat),
    (date, "date", date.isoformat, lambda value: datetime.fromisoformat(value).date()),
    (time, "time", time.isoformat, time.fromisoformat),
    (Decimal, "decimal", str, Decimal),
    (uuid.UUID, "uuid", lambda value: {"hex": value.hex}, lambda value: uuid.UUID(**value)),
)
_DECODERS: dict[str, Callable[[Any], Any]] = {
    **{marker: decode for _, marker, _, decode in _TYPES},
    "bytes": lambda value: value.encode("utf-8"),
    "base64": lambda value: base64.b64decode(value.encode("utf-8")),
}


def _default(value: Any) -> Any:
    for kind, marker, encode, _ in _TYPES:
        if isinstance(value, kind):
            return {"__type__": marker, "__value__": encode(value)}
    if isinstance(value, bytes):
        try:
            return {"__type__": "bytes", "__value__": value.decode("utf-8")}
        except UnicodeDecodeError:
            return {"__type__": "base64", "__value__": base64.b64encode(value).decode("utf-8")}
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _object_hook(value: dict) -> Any:
    if value.keys() == {"__type__", "__value__"} and value["__type__"] in _DECODERS:
        return _DECODERS[value["__type__"]](value["__value__"])
    return value


def dumps(value: Any) -> bytes:
    """Encode ``value`` as a nameko message body."""
    return json.dumps(value, default=_default).encode(CONTENT_ENCODING)


def loads(body: bytes) -> Any:
    """Decode a nameko message body; raises ``ValueError`` if it is not JSON."""
    return json.loads(body.decode(CONTENT_ENCODING), object_hook=_object_hook)
