"""What ``/keys`` and ``/audit`` accept and return."""

from __future__ import annotations

import re

from marshmallow import Schema, ValidationError, fields, validate

from gateway.access import keys
from services.fields import Cursor, FullMatch, Line
from services.infra.pagination import DEFAULT_LIMIT, MAX_LIMIT
from services.schemas import StrictSchema

KEY_ID_PATTERN = f"^{keys.KEY_ID.pattern}$"
# an ISO 8601 time with its zone: what `since` takes
AWARE_TIME = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:\.[0-9]{1,6})?)?(?:Z|[+-][0-9]{2}:[0-9]{2})$"


class AwareTime(fields.AwareDateTime):
    """An ISO 8601 time with its zone (``AWARE_TIME``, published as the field's pattern)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.metadata = {**self.metadata, "pattern": AWARE_TIME}

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str) or re.fullmatch(AWARE_TIME, value) is None:
            raise ValidationError("Must be an ISO 8601 time with its zone, e.g. 2026-12-04T09:00:00Z.")
        return super()._deserialize(value, attr, data, **kwargs)


class KeySchema(Schema):
    """A key as shown to people: never its secret."""

    id = fields.String(metadata={"example": "k3y1d0000000"})
    name = fields.String(metadata={"description": "Who uses it: the actor of every change it makes."})
    scopes = fields.List(fields.String(validate=validate.OneOf(list(keys.SCOPES))))
    created_at = fields.DateTime()
    created_by = fields.String(allow_none=True)
    expires_at = fields.DateTime(allow_none=True)
    last_used_at = fields.DateTime(allow_none=True, metadata={"description": "Updated every few seconds."})
    revoked = fields.Boolean()
    revoked_at = fields.DateTime(allow_none=True)
    rate_per_second = fields.Float(allow_none=True, metadata={"description": "null: the configured default."})
    burst = fields.Integer(allow_none=True)


class CreatedKeySchema(KeySchema):
    api_key = fields.String(metadata={"description": "The key itself: shown this once, never again."})


class KeyCreateSchema(StrictSchema):
    """Body of ``POST /keys``."""

    name = Line(keys.MAX_NAME, required=True)
    scopes = fields.List(
        fields.String(validate=validate.OneOf(list(keys.SCOPES))), required=True, validate=validate.Length(min=1)
    )
    # apispec does not publish an exclusive bound: the metadata does (OpenAPI 3.1 writes it as a number)
    expires_in_days = fields.Float(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=0, max=36500, min_inclusive=False),
        metadata={"exclusiveMinimum": 0, "description": "null: never expires."},
    )
    rate_per_second = fields.Float(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=0, max=1_000_000, min_inclusive=False),
        metadata={"exclusiveMinimum": 0, "description": "null: RATE_LIMIT_PER_SECOND."},
    )
    burst = fields.Integer(
        load_default=None,
        allow_none=True,
        validate=validate.Range(min=1, max=1_000_000),
        metadata={"description": "null: RATE_LIMIT_BURST."},
    )


class KeyPageSchema(Schema):
    items = fields.List(fields.Nested(KeySchema))


class AuditQuerySchema(StrictSchema):
    key_id = fields.String(
        load_default=None, allow_none=True, validate=FullMatch(KEY_ID_PATTERN, error="Not a key id.")
    )
    since = AwareTime(
        load_default=None, allow_none=True, metadata={"description": "Only entries at or after this time."}
    )
    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT))
    cursor = Cursor()


class AuditEntrySchema(Schema):
    id = fields.Integer()
    at = fields.DateTime()
    key_id = fields.String(allow_none=True)
    key_name = fields.String(allow_none=True, metadata={"description": "The actor."})
    on_behalf_of = fields.String(allow_none=True, metadata={"description": "The X-Actor the caller sent."})
    method = fields.String()
    route = fields.String(metadata={"example": "/students/{student_id}"})
    targets = fields.Dict(metadata={"description": "Ids in the path, and those of what was created."})
    status = fields.Integer()
    correlation_id = fields.String(
        allow_none=True, metadata={"description": "The X-Request-Id sent, or the one issued."}
    )


class AuditPageSchema(Schema):
    items = fields.List(fields.Nested(AuditEntrySchema))
    next_cursor = fields.String(allow_none=True)
