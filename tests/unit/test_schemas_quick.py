"""The quick paths of the status change schemas (``services.schemas.quick_status_change``,
``quick_status_change_body`` and, for the events, ``quick_status_changed``) against the schemas
themselves, on generated input: whatever the quick path loads, the schema loads to the same; what it
declines, the schema decides."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import EXCLUDE, ValidationError

from services import lifecycle
from services.exceptions import ValidationFailed
from services.schemas import (
    StatusChangeBodySchema,
    StatusChangeSchema,
    StudentStatusChangedSchema,
    StudentStatusChangesSchema,
    quick_status_change,
    quick_status_change_body,
    quick_status_changed,
    status_change_requests,
    status_changes,
)

CHANGE, BODY = StatusChangeSchema(), StatusChangeBodySchema()
CHANGED, CHANGED_BATCH = StudentStatusChangedSchema(unknown=EXCLUDE), StudentStatusChangesSchema()

# requests as a client sends them, then up to two keys changed to an awkward or a wrong value,
# removed, or one key added: near the edge of what the schema accepts, where the two could differ
awkward_text = st.sampled_from(
    ["", " ", "\t", "x" * 200, "x" * 201, "y" * 1000, "y" * 1001, " padded\u3000", "a\nb", "a\x00b", "a\x85b",
     "a\u2028b", "\ud800", "é\ud83d", "ok", "Ana Lima", "\u00a0", "a\tb", "tab\t", "7", "ACTIVE", "done"]
)  # fmt: skip
plain_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Zl", "Zp")), min_size=1, max_size=40)
wrong = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2)
)
awkward = st.one_of(
    awkward_text,
    st.text(max_size=30),
    st.text(min_size=195, max_size=205),
    wrong,
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: f"{{{u}}}"),
    st.sampled_from(["a" * 128, "a" * 129, "with space", "ümlaut", "x\n", "00-" + "a" * 32 + "-" + "b" * 16 + "-01"]),
)
optional_text = st.one_of(st.none(), plain_text)
CHANGE_FIELDS = {
    "status": st.sampled_from(lifecycle.STATUSES),
    "student_id": st.integers(1, 2**40),
    "reason": optional_text,
    "actor": optional_text,
    "on_behalf_of": optional_text,
    "idempotency_key": optional_text,
    "request_id": st.one_of(st.none(), st.uuids().map(str)),
    "course": optional_text,
    "correlation_id": st.one_of(st.none(), st.uuids().map(str)),
    "traceparent": st.one_of(st.none(), st.just("00-" + "a" * 32 + "-" + "b" * 16 + "-01")),
}
REMOVED = object()


@st.composite
def near_valid(draw, fields: dict, required: tuple[str, ...] = ("status", "student_id")) -> dict:
    data = draw(st.fixed_dictionaries({}, optional=fields))
    data.update({key: draw(fields[key]) for key in required if key in fields})
    keys = st.sampled_from([*fields, "unexpected"])
    for key, value in draw(st.lists(st.tuples(keys, st.one_of(awkward, st.just(REMOVED))), max_size=2)):
        if value is REMOVED:
            data.pop(key, None)
        else:
            data[key] = value
    return data


CHANGES = near_valid(CHANGE_FIELDS)
CHANGED_FIELDS = {  # a student_status_changed change, as the status service publishes one
    "student_id": st.integers(1, 2**40),
    "from_status": st.sampled_from(lifecycle.STATUSES),
    "to_status": st.sampled_from(lifecycle.STATUSES),
    "reason": optional_text,
    "actor": optional_text,
    "request_id": st.uuids().map(str),
    "course": optional_text,
    "version": st.integers(1, 2**40),
    "occurred_at": st.sampled_from(
        [
            "2026-12-06T08:30:15.123456+00:00",
            "2026-12-06T08:30:15Z",
            "2026-12-06T08:30:15",
            "06/12/2026",
            "2026-13-01T00:00:00+00:00",
        ]
    ),
    "correlation_id": st.one_of(st.none(), st.uuids().map(str)),
    "traceparent": st.one_of(st.none(), st.just("00-" + "a" * 32 + "-" + "b" * 16 + "-01")),
}


CHANGED_CHANGES = near_valid(CHANGED_FIELDS, required=("student_id", "to_status", "version"))


BODIES = near_valid({"status": CHANGE_FIELDS["status"], "reason": optional_text})


def schema_load(schema, data):
    try:
        return schema.load(data)
    except ValidationError:
        return ValidationError


SETTINGS = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(CHANGES)
def test_a_request_loads_quickly_only_as_the_schema_loads_it(data):
    quick = quick_status_change(data)
    if quick is not None:
        assert schema_load(CHANGE, data) == quick


@SETTINGS
@given(BODIES)
def test_a_body_loads_quickly_only_as_the_schema_loads_it(data):
    quick = quick_status_change_body(data)
    if quick is not None:
        assert schema_load(BODY, data) == quick


@pytest.mark.parametrize(
    "data",
    [
        {"status": "active", "student_id": 7},
        {
            "request_id": str(uuid.uuid4()),
            "student_id": 12,
            "status": "completed",
            "reason": "passed\nall exams",
            "actor": " registrar ",
            "on_behalf_of": None,
            "idempotency_key": "k-1",
            "course": "Física Nuclear",
            "correlation_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        },
    ],
)
def test_what_the_gateway_sends_takes_the_quick_path(data):
    quick = quick_status_change(data)
    assert quick is not None and quick == CHANGE.load(data)
    assert status_change_requests({"requests": [data, data]}) == [quick, quick]
    assert quick_status_change_body({"status": data["status"], "reason": data.get("reason")}) is not None


def test_what_the_quick_path_declines_is_still_refused_with_the_schemas_message():
    batch = {"requests": [{"status": "active", "student_id": 7}, {"status": "flying", "student_id": 7}]}
    with pytest.raises(ValidationFailed) as refused:
        status_change_requests(batch)
    with pytest.raises(ValidationError) as schemas:
        CHANGE.load(batch["requests"][1])
    assert refused.value.details == {"requests": {"1": schemas.value.messages}}


@SETTINGS
@given(CHANGED_CHANGES)
def test_a_published_change_loads_quickly_only_as_the_schema_loads_it(data):
    quick = quick_status_changed(data, {})
    if quick is not None:
        assert schema_load(CHANGED, data) == quick


@SETTINGS
@given(st.lists(CHANGED_CHANGES, max_size=4))
def test_a_batch_of_changes_loads_as_the_batch_schema_loads_it(changes):
    expected = schema_load(CHANGED_BATCH, {"changes": changes})
    if expected is ValidationError:
        with pytest.raises(ValidationFailed):
            status_changes({"changes": changes})
    else:
        assert status_changes({"changes": changes}) == expected["changes"]


def test_what_the_status_service_publishes_takes_the_quick_path():
    change = {
        "student_id": 7,
        "from_status": "active",
        "to_status": "completed",
        "reason": "passed",
        "actor": "key:registrar",
        "request_id": str(uuid.uuid4()),
        "course": "Física",
        "version": 3,
        "occurred_at": "2026-12-06T08:30:15.123456+00:00",
        "correlation_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    quick = quick_status_changed(change, {})
    assert quick is not None and quick == CHANGED.load(change)
    assert quick["occurred_at"].tzinfo is not None and quick["traceparent"] is None
