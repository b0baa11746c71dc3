"""The quick path of the status change schemas (``services.schemas.quick_status_change`` and
``quick_status_change_body``) against the schemas themselves, on generated input: whatever the
quick path loads, the schema loads to the same; what it declines, the schema decides."""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from services import lifecycle
from services.exceptions import ValidationFailed
from services.schemas import (
    StatusChangeBodySchema,
    StatusChangeSchema,
    quick_status_change,
    quick_status_change_body,
    status_change_requests,
)

CHANGE, BODY = StatusChangeSchema(), StatusChangeBodySchema()

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
def near_valid(draw, fields: dict) -> dict:
    data = draw(st.fixed_dictionaries({}, optional=fields))
    data.update({key: draw(fields[key]) for key in ("status", "student_id") if key in fields})
    keys = st.sampled_from([*fields, "unexpected"])
    for key, value in draw(st.lists(st.tuples(keys, st.one_of(awkward, st.just(REMOVED))), max_size=2)):
        if value is REMOVED:
            data.pop(key, None)
        else:
            data[key] = value
    return data


CHANGES = near_valid(CHANGE_FIELDS)
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
