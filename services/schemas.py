"""marshmallow schemas: what the services accept and what they return.

``load()`` raises :class:`services.exceptions.ValidationFailed` with per-field
messages (see :func:`load`); the gateway's OpenAPI document is generated from
these same classes; the field types (text, e-mail addresses, cursors) and their
published patterns are in :mod:`services.fields`.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
    validates_schema,
)

from services import i18n, lifecycle
from services.exceptions import ValidationFailed
from services.fields import (
    FREE_TEXT,
    LINE,
    SPACES,
    SURROGATE,
    CorrelationId,
    Cursor,
    EmailAddress,
    FreeText,
    Language,
    Line,
    TraceParent,
)
from services.infra.correlation import PATTERN as CORRELATION_ID
from services.infra.pagination import DEFAULT_LIMIT, MAX_ID, MAX_LIMIT


def load(schema: Schema, data: Any) -> dict:
    """Validate ``data`` against ``schema``; errors become ``ValidationFailed``."""
    if not isinstance(data, dict):
        raise ValidationFailed("Expected an object.", {"_schema": ["Expected an object."]})
    try:
        return schema.load(data)
    except ValidationError as exc:
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        raise ValidationFailed("Input failed validation.", messages) from None


def positive_id(value: object, name: str = "student_id") -> int:
    """Validate an id passed as an RPC argument."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ID:
        raise ValidationFailed(f"Invalid {name}.", {name: [f"Must be an integer from 1 to {MAX_ID}."]})
    return value


def _strip(data: Any, names: tuple[str, ...]) -> Any:
    if isinstance(data, dict):
        return {k: v.strip(SPACES) if k in names and isinstance(v, str) else v for k, v in data.items()}
    return data


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


# --- students ---------------------------------------------------------------

NAME = 200  # characters of a name or a course


class StudentCreateSchema(StrictSchema):
    name = Line(NAME, required=True)
    email = EmailAddress(required=True)
    course = Line(NAME, required=True)
    language = Language(
        metadata={
            "description": "The language of the student's mail: en or pt_BR (a tag that means one, such as "
            "pt-BR, is stored as that one); null: none of their own, so the default language (DEFAULT_LANGUAGE).",
            "example": "pt_BR",
        }
    )

    @pre_load
    def strip(self, data: Any, **_: Any) -> Any:
        return _strip(data, ("email",))

    @post_load
    def normalise(self, data: dict, **_: Any) -> dict:
        if "email" in data:
            data["email"] = data["email"].lower()
        return data


class StudentUpdateSchema(StudentCreateSchema):
    """Partial update: any subset of the creatable fields, at least one."""

    def __init__(self, **kwargs: Any):
        super().__init__(partial=True, **kwargs)

    @validates_schema
    def not_empty(self, data: dict, **_: Any) -> None:
        if not data:
            raise ValidationError("Provide at least one of: name, email, course, language.", "_schema")


class StudentSchema(Schema):
    id = fields.Integer()
    name = fields.String()
    email = fields.Email()
    course = fields.String()
    language = fields.String(
        allow_none=True,
        validate=validate.OneOf(i18n.LANGUAGES),  # what it dumps; published as the field's enum
        metadata={"description": "The language of the student's mail; null: the default language."},
    )
    status = fields.String(metadata={"enum": list(lifecycle.STATUSES)})
    status_version = fields.Integer(
        metadata={"description": "Its status's version (the status service's): raised by every change of its status."}
    )
    version = fields.Integer(metadata={"description": "Its profile's version: raised by every update."})
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()


class ListStudentsSchema(StrictSchema):
    status = fields.String(load_default=None, allow_none=True, validate=validate.OneOf(lifecycle.STATUSES))
    course = Line(NAME, load_default=None, allow_none=True)
    # the start of a name, any case (e.g. ``ana`` finds "Ana Lima")
    name = Line(NAME, load_default=None, allow_none=True)
    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT))
    cursor = Cursor()


class StudentPageSchema(Schema):
    items = fields.List(fields.Nested(StudentSchema))
    next_cursor = fields.String(allow_none=True)


class StudentCreatedSchema(Schema):
    """Payload of ``students.student_created``: the student as created (``enrolled``)."""

    student = fields.Nested(StudentSchema, required=True)


class StudentUpdatedSchema(Schema):
    """Payload of ``students.student_updated``: the student as changed, and which fields changed."""

    student = fields.Nested(StudentSchema, required=True)
    changes = fields.List(
        fields.String(validate=validate.OneOf(sorted(StudentCreateSchema().fields))),
        required=True,
        metadata={"description": "The names of the fields that changed, sorted."},
    )


class StudentDeletedSchema(Schema):
    """Payload of ``students.student_deleted``: the student as it was (its history is kept)."""

    student_id = fields.Integer(required=True)
    student = fields.Nested(StudentSchema, required=True)


# --- status -----------------------------------------------------------------

REASON = 1000  # characters of a reason
ACTOR = 200  # characters of an actor (who asked), or of whom it asked on behalf of
IDEMPOTENCY_KEY = 200  # characters of an idempotency key


class StatusChangeBodySchema(StrictSchema):
    """Body of ``POST /students/{id}/status``."""

    status = fields.String(required=True, validate=validate.OneOf(lifecycle.STATUSES))
    reason = FreeText(REASON, load_default=None, allow_none=True)


class StatusChangeSchema(StatusChangeBodySchema):
    """A status change request as the status service accepts it."""

    student_id = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    actor = Line(ACTOR, load_default=None, allow_none=True)
    # a detail next to the actor (e.g. a person's login in the calling app), never instead of it:
    # the actor is who is accountable (an API key's name), this only who it says it acts for
    on_behalf_of = Line(ACTOR, load_default=None, allow_none=True)
    idempotency_key = Line(IDEMPOTENCY_KEY, load_default=None, allow_none=True)
    request_id = fields.UUID(load_default=None, allow_none=True)
    # a completion's course, carried to student_status_changed (None: the student's course)
    course = Line(NAME, load_default=None, allow_none=True)
    # the request's own, when several travel in one message (None: the caller's, or the message's)
    correlation_id = CorrelationId(load_default=None, allow_none=True)
    traceparent = TraceParent()  # its own span, likewise (present while traces are on)


class StatusRequestErrorSchema(Schema):
    code = fields.String()
    message = fields.String()


class StatusRequestSchema(Schema):
    request_id = fields.String(attribute="id")
    student_id = fields.Integer()
    status = fields.String(attribute="target_status", metadata={"enum": list(lifecycle.STATUSES)})
    reason = fields.String(allow_none=True)
    actor = fields.String(allow_none=True)
    on_behalf_of = fields.String(allow_none=True)
    idempotency_key = fields.String(allow_none=True)
    course = fields.String(allow_none=True)
    correlation_id = fields.String(
        allow_none=True, metadata={"description": "The X-Request-Id (correlation id) the request came with."}
    )
    state = fields.String(metadata={"enum": ["pending", "applied", "rejected", "failed"]})
    from_status = fields.String(allow_none=True)
    error = fields.Method("dump_error", allow_none=True)
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    # only while the gateway knows the request (it issued the id) and the status service does not yet
    queued = fields.Boolean(metadata={"description": "True while the request is still queued."})

    def dump_error(self, request: Any) -> dict | None:
        if not request.error_code:
            return None
        return {"code": request.error_code, "message": request.error_message}


class HistoryEntrySchema(Schema):
    id = fields.Integer()
    student_id = fields.Integer()
    from_status = fields.String()
    to_status = fields.String()
    reason = fields.String(allow_none=True)
    actor = fields.String(allow_none=True)
    on_behalf_of = fields.String(allow_none=True)
    request_id = fields.String()
    version = fields.Integer()
    occurred_at = fields.AwareDateTime()


class HistoryPageSchema(Schema):
    items = fields.List(fields.Nested(HistoryEntrySchema))
    next_cursor = fields.String(allow_none=True)


class HistoryQuerySchema(StrictSchema):
    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT))
    cursor = Cursor()


class RequestSearchSchema(StrictSchema):
    """Filters of ``search_status_requests`` (the console's requests page): all optional, combined."""

    request_id = fields.UUID(load_default=None, allow_none=True)
    correlation_id = CorrelationId(load_default=None, allow_none=True)
    student_id = fields.Integer(
        load_default=None, allow_none=True, strict=True, validate=validate.Range(min=1, max=MAX_ID)
    )
    state = fields.String(
        load_default=None, allow_none=True, validate=validate.OneOf(("pending", "applied", "rejected", "failed"))
    )
    since = fields.AwareDateTime(load_default=None, allow_none=True)
    until = fields.AwareDateTime(load_default=None, allow_none=True)
    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=200))
    cursor = Cursor()


class JobListSchema(StrictSchema):
    limit = fields.Integer(load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=200))
    before = fields.AwareDateTime(load_default=None, allow_none=True)


class JobErrorsSchema(StrictSchema):
    after_row = fields.Integer(load_default=0, strict=True, validate=validate.Range(min=0, max=MAX_ID))
    limit = fields.Integer(load_default=1000, strict=True, validate=validate.Range(min=1, max=1000))


class CurrentStatusSchema(Schema):
    student_id = fields.Integer()
    status = fields.String()
    version = fields.Integer()
    updated_at = fields.AwareDateTime()


class StudentStatusChangedSchema(Schema):
    """Payload of the ``status.student_status_changed`` event."""

    student_id = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    from_status = fields.String()
    to_status = fields.String(required=True, validate=validate.OneOf(lifecycle.STATUSES))
    reason = fields.String(allow_none=True)
    actor = fields.String(allow_none=True)
    request_id = fields.String()
    version = fields.Integer(required=True, strict=True, validate=validate.Range(min=1))
    occurred_at = fields.AwareDateTime()
    course = fields.String(allow_none=True, load_default=None)  # a completion's course, if given
    # the request's: a batch's changes each keep their own (the message's header is the first one's)
    correlation_id = CorrelationId(allow_none=True, load_default=None)
    traceparent = TraceParent()  # the span that applied it (present while traces are on)


class StudentStatusChangesSchema(Schema):
    """Payload of ``status.student_status_changed``: the changes of one applied
    batch, in the order they were applied (one or many)."""

    changes = fields.List(fields.Nested(StudentStatusChangedSchema(unknown=EXCLUDE)), required=True)


_status_changes, _status_changed = StudentStatusChangesSchema(), StudentStatusChangedSchema(unknown=EXCLUDE)


def status_changes(payload: Any) -> list[dict]:
    """The changes a ``student_status_changed`` event carries; a single change
    (the form of one event per change) is read as a batch of one."""
    if isinstance(payload, dict) and "changes" in payload:
        items = payload["changes"]
        if len(payload) == 1 and type(items) is list:
            times: dict[str, Any] = {}  # a batch's changes share their time: read once
            quick = [quick_status_changed(item, times) for item in items]
            if None not in quick:
                return quick
        return load(_status_changes, payload)["changes"]
    quick = quick_status_changed(payload, {})
    return [quick] if quick is not None else [load(_status_changed, payload)]


class StatusChangeBatchSchema(Schema):
    """Payload of ``gateway.status_change_requested``: requests accepted together."""

    requests = fields.List(fields.Nested(StatusChangeSchema()), required=True, validate=validate.Length(min=1))


# made once: building a schema copies its fields, which cost more than loading a request
_status_change_batch, _status_change = StatusChangeBatchSchema(), StatusChangeSchema()


def status_change_requests(payload: Any) -> list[dict]:
    """The requests a ``status_change_requested`` event carries (a batch, or one)."""
    if isinstance(payload, dict) and "requests" in payload:
        items = payload["requests"]
        if len(payload) == 1 and isinstance(items, list) and items:
            quick = [quick_status_change(item) for item in items]
            if None not in quick:
                return quick
        return load(_status_change_batch, payload)["requests"]
    quick = quick_status_change(payload)
    return [quick] if quick is not None else [load(_status_change, payload)]


# --- the quick path of the status change schemas ---------------------------------------------
# A status change is loaded once by the gateway and once by the status service; marshmallow's
# load is most of what that costs (14% of the status service's time draining a backlog). These
# functions give what the schema's load gives for a request that is valid in the ordinary way
# (JSON strings and numbers), and None for anything else, which the schema then loads or refuses
# with its messages. tests/unit/test_schemas_quick.py checks the two agree on generated input.

_LINE, _FREE_TEXT = re.compile(LINE), re.compile(FREE_TEXT)
_CORRELATION_ID = re.compile(f"^{CORRELATION_ID}$")
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_BODY_KEYS = frozenset(("status", "reason"))
_CHANGE_KEYS = _BODY_KEYS | {
    "student_id", "actor", "on_behalf_of", "idempotency_key", "request_id", "course", "correlation_id", "traceparent"
}  # fmt: skip
_MISSING = object()


def _line(value: Any, max_length: int) -> Any:
    """``Line(max_length)``'s result, or _MISSING if it is not a plain valid one."""
    if value is None:
        return None
    if type(value) is not str or not 1 <= len(value) <= max_length:
        return _MISSING
    if _LINE.fullmatch(value) is None or SURROGATE.search(value):
        return _MISSING
    return value.strip(SPACES)


def _reason(value: Any) -> Any:
    if value is None:
        return None
    if type(value) is not str or len(value) > REASON:
        return _MISSING
    if value and (_FREE_TEXT.fullmatch(value) is None or SURROGATE.search(value)):
        return _MISSING
    return value


def quick_status_change_body(data: Any) -> dict | None:
    """``StatusChangeBodySchema().load(data)`` for a plain valid body; None: ask the schema."""
    if type(data) is not dict or not data.keys() <= _BODY_KEYS:
        return None
    status, reason = data.get("status"), _reason(data.get("reason"))
    if type(status) is not str or status not in lifecycle.STATUSES or reason is _MISSING:
        return None
    return {"status": status, "reason": reason}


def quick_status_change(data: Any) -> dict | None:
    """``StatusChangeSchema().load(data)`` for a plain valid request; None: ask the schema."""
    if type(data) is not dict or not data.keys() <= _CHANGE_KEYS:
        return None
    status, student_id = data.get("status"), data.get("student_id")
    if type(status) is not str or status not in lifecycle.STATUSES or type(student_id) is not int or student_id < 1:
        return None
    loaded = {
        "status": status,
        "student_id": student_id,
        "reason": _reason(data.get("reason")),
        "actor": _line(data.get("actor"), ACTOR),
        "on_behalf_of": _line(data.get("on_behalf_of"), ACTOR),
        "idempotency_key": _line(data.get("idempotency_key"), IDEMPOTENCY_KEY),
        "course": _line(data.get("course"), NAME),
    }
    if _MISSING in loaded.values():
        return None
    request_id = data.get("request_id")
    if request_id is not None:
        if type(request_id) is not str or _UUID.fullmatch(request_id) is None:
            return None
        request_id = uuid.UUID(request_id)
    correlation_id = _correlation_id(data.get("correlation_id"))
    if correlation_id is _MISSING:
        return None
    loaded.update(request_id=request_id, correlation_id=correlation_id, traceparent=_traceparent(data))
    return loaded


def _correlation_id(value: Any) -> Any:
    """``CorrelationId``'s result (None allowed), or _MISSING if it is not a valid one."""
    if value is None or (type(value) is str and _CORRELATION_ID.fullmatch(value)):
        return value
    return _MISSING


def _traceparent(data: dict) -> str | None:
    """``TraceParent``'s result: the item's trace context, or None for anything else."""
    value = data.get("traceparent")
    return value if isinstance(value, str) and TraceParent.PATTERN.fullmatch(value) else None


_OCCURRED_AT = fields.AwareDateTime()
_CHANGED_TEXT = ("from_status", "request_id")  # text when present: null is refused
_CHANGED_NULLABLE = ("reason", "actor")  # text or null when present


def quick_status_changed(data: Any, times: dict[str, Any]) -> dict | None:
    """``StudentStatusChangedSchema(unknown=EXCLUDE).load(data)`` for a plain valid change (as the
    status service publishes them); None: ask the schema. ``times``: the ``occurred_at`` values
    read so far, by their text (the changes of a batch share theirs)."""
    if type(data) is not dict:
        return None
    student_id, to_status, version = data.get("student_id"), data.get("to_status"), data.get("version")
    if type(student_id) is not int or student_id < 1 or type(version) is not int or version < 1:
        return None
    if type(to_status) is not str or to_status not in lifecycle.STATUSES:
        return None
    loaded = {"student_id": student_id, "to_status": to_status, "version": version}
    for key in _CHANGED_TEXT:
        if key in data:
            if type(data[key]) is not str:
                return None
            loaded[key] = data[key]
    for key in _CHANGED_NULLABLE:
        if key in data:
            if data[key] is not None and type(data[key]) is not str:
                return None
            loaded[key] = data[key]
    course, correlation_id = data.get("course"), _correlation_id(data.get("correlation_id"))
    if (course is not None and type(course) is not str) or correlation_id is _MISSING:
        return None
    loaded.update(course=course, correlation_id=correlation_id, traceparent=_traceparent(data))
    if "occurred_at" in data:
        text = data["occurred_at"]
        if type(text) is not str:
            return None
        if text not in times:
            try:
                times[text] = _OCCURRED_AT.deserialize(text)
            except ValidationError:
                times[text] = None
        if times[text] is None:
            return None
        loaded["occurred_at"] = times[text]
    return loaded


class JobOptionsSchema(StrictSchema):
    """Who submits a bulk job, and its idempotency key: the rules of ``StatusChangeSchema``,
    since they end up on every request of the job."""

    idempotency_key = Line(IDEMPOTENCY_KEY, load_default=None, allow_none=True)
    actor = Line(ACTOR, load_default=None, allow_none=True)
    on_behalf_of = Line(ACTOR, load_default=None, allow_none=True)
    correlation_id = CorrelationId(load_default=None, allow_none=True)  # None: the caller's


class JobRowSchema(StrictSchema):
    """One row of a bulk job submitted over RPC: a student by id or by e-mail."""

    student_id = fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_ID))
    email = EmailAddress()
    status = fields.String(required=True, validate=validate.OneOf(lifecycle.STATUSES))
    reason = FreeText(REASON, load_default=None, allow_none=True)

    @validates_schema
    def one_student(self, data: dict, **_: Any) -> None:
        if ("student_id" in data) == ("email" in data):
            raise ValidationError("Provide student_id or email, not both.", "student_id")


class JobRowErrorSchema(Schema):
    row = fields.Integer(metadata={"description": "Row number in the upload, from 1 (CSV: after the header)."})
    code = fields.String(metadata={"example": "INVALID_TRANSITION"})
    message = fields.String()
    details = fields.Dict()


class JobSchema(Schema):
    """What ``get_job`` returns (documentation of the bulk job resource)."""

    job_id = fields.String()
    state = fields.String(metadata={"enum": ["receiving", "running", "done"]})
    total = fields.Integer()
    pending = fields.Integer()
    applied = fields.Integer()
    rejected = fields.Integer(metadata={"description": "Refused rows and rejected changes."})
    failed = fields.Integer()
    rows_per_second = fields.Float(allow_none=True)
    actor = fields.String(allow_none=True)
    on_behalf_of = fields.String(allow_none=True)
    idempotency_key = fields.String(allow_none=True)
    correlation_id = fields.String(
        allow_none=True, metadata={"description": "The upload's correlation id, which every row's request carries."}
    )
    created_at = fields.String()
    sealed_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    errors = fields.List(fields.Nested(JobRowErrorSchema), metadata={"description": "The first row errors."})


class StudentIdsSchema(StrictSchema):
    """Arguments of the students service's batch lookups."""

    student_ids = fields.List(
        fields.Integer(strict=True, validate=validate.Range(min=1, max=MAX_ID)),
        load_default=list,
        validate=validate.Length(max=10_000),
    )
    emails = fields.List(
        fields.String(validate=validate.Length(max=320)), load_default=list, validate=validate.Length(max=10_000)
    )


# --- certificates -----------------------------------------------------------


class CertificateSchema(Schema):
    """What anyone holding the code may see (no e-mail address)."""

    code = fields.String()
    student_id = fields.Integer()
    student_name = fields.String()
    course = fields.String()
    issued_at = fields.AwareDateTime()
    status = fields.Method("dump_status", metadata={"enum": ["valid", "revoked"]})
    revoked_at = fields.AwareDateTime(allow_none=True)
    revoke_reason = fields.String(allow_none=True)
    verification_url = fields.String(dump_only=True)
    pdf_url = fields.String(dump_only=True)
    credential_url = fields.String(dump_only=True, metadata={"description": "The signed Open Badges 3.0 credential."})

    def dump_status(self, certificate: Any) -> str:
        return "revoked" if certificate.revoked_at is not None else "valid"


class CertificateRevokedSchema(CertificateSchema):
    """Payload of ``certificates.certificate_revoked``: the certificate as ``get_certificate``
    shows it from now on (``status`` ``revoked``, with the reason and when)."""


class CertificateIssuedSchema(Schema):
    """Payload of ``certificates.certificate_issued``: the certificate as ``get_certificate`` shows
    it, with the student's e-mail and the completion's correlation id (for the mail to the student);
    these are the fields its subscribers rely on."""

    class Meta:
        unknown = EXCLUDE

    code = fields.String(required=True, validate=validate.Length(min=1, max=64))
    student_id = fields.Integer(load_default=None, allow_none=True, strict=True)
    student_name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    student_email = fields.Email(required=True, validate=validate.Length(max=320))
    course = fields.String(required=True, validate=validate.Length(min=1, max=200))
    issued_at = fields.AwareDateTime(load_default=None, allow_none=True)
    verification_url = fields.String(required=True, validate=validate.Length(min=1, max=2000))
    pdf_url = fields.String(load_default=None, allow_none=True)
    credential_url = fields.String(load_default=None, allow_none=True)
    correlation_id = CorrelationId(load_default=None, allow_none=True)
    # the certificate's language, for the mail (absent, null or unknown: the default language)
    language = fields.String(load_default=None, allow_none=True, metadata={"example": "pt_BR"})


class StudentCertificateSchema(CertificateSchema):
    """A certificate as its student's list shows it: with the correlation id of the
    completion that issued it (never in the public verification)."""

    correlation_id = fields.String(allow_none=True)


class CompletionBodySchema(StrictSchema):
    """Body of ``POST /students/{id}/completion`` (may be empty)."""

    course = Line(NAME, load_default=None, allow_none=True)


# --- events -----------------------------------------------------------------

# Every event a service publishes, ``(source, event type)``: its payload. Published on the
# exchange ``<source>.events`` with the event type as routing key; who subscribes, and through
# which durable queue, is in services/infra/topology.py. The AsyncAPI document is made from both.
EVENTS: dict[tuple[str, str], type[Schema]] = {
    ("students", "student_created"): StudentCreatedSchema,
    ("students", "student_updated"): StudentUpdatedSchema,
    ("students", "student_deleted"): StudentDeletedSchema,
    ("status", "student_status_changed"): StudentStatusChangesSchema,
    ("certificates", "certificate_issued"): CertificateIssuedSchema,
    ("certificates", "certificate_revoked"): CertificateRevokedSchema,
    ("gateway", "status_change_requested"): StatusChangeBatchSchema,
}
