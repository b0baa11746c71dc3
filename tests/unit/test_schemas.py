"""Input schemas (via services.schemas.load) and keyset cursors."""

from __future__ import annotations

import base64

import pytest

from services.exceptions import ValidationFailed
from services.infra.pagination import DEFAULT_LIMIT, decode_cursor, encode_cursor, page
from services.schemas import (
    ListStudentsSchema,
    StatusChangeSchema,
    StudentCreateSchema,
    StudentUpdateSchema,
    load,
    positive_id,
)

VALID = {"name": "Ana Lima", "email": "ana@example.com", "course": "Physics"}
# well-formed (labels of 60 characters) but longer than the 320 allowed
LONG_EMAIL = "a@" + ".".join(["b" * 60] * 6) + ".com"


def failed_fields(schema, data) -> dict:
    with pytest.raises(ValidationFailed) as info:
        load(schema, data)
    assert info.value.code == "VALIDATION_ERROR"
    return info.value.details


# --- StudentCreateSchema ---------------------------------------------------


def test_create_valid():
    assert load(StudentCreateSchema(), VALID) == VALID


def test_create_strips_and_lowercases_email():
    data = {"name": "  Ana Lima ", "email": " Ana.Lima@Example.COM ", "course": "\tPhysics\n"}

    assert load(StudentCreateSchema(), data) == {
        "name": "Ana Lima",
        "email": "ana.lima@example.com",
        "course": "Physics",
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": 42}, "name"),
        ({"course": ""}, "course"),
        ({"course": "x" * 201}, "course"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "ana@"}, "email"),
        ({"email": ""}, "email"),
        ({"email": LONG_EMAIL}, "email"),
        ({"role": "admin"}, "role"),
    ],
)
def test_create_rejects_bad_field(changes, field):
    details = failed_fields(StudentCreateSchema(), {**VALID, **changes})

    assert set(details) == {field}
    assert details[field] and all(isinstance(m, str) for m in details[field])


def test_create_accepts_names_and_emails_at_their_limits():
    email = "a@" + ".".join(["b" * 60] * 5) + ".com"
    data = {"name": "n" * 200, "email": email, "course": "c" * 200}

    assert load(StudentCreateSchema(), data) == data


def test_create_email_too_long_is_a_length_error():
    details = failed_fields(StudentCreateSchema(), {**VALID, "email": LONG_EMAIL})

    assert details == {"email": ["Longer than maximum length 320."]}


@pytest.mark.parametrize("missing", ["name", "email", "course"])
def test_create_requires_each_field(missing):
    data = {k: v for k, v in VALID.items() if k != missing}

    assert failed_fields(StudentCreateSchema(), data) == {missing: ["Missing data for required field."]}


def test_create_reports_every_bad_field_at_once():
    details = failed_fields(StudentCreateSchema(), {"email": "nope", "extra": 1})

    assert set(details) == {"name", "email", "course", "extra"}


@pytest.mark.parametrize("data", [None, [], "text", 42])
def test_load_rejects_non_objects(data):
    assert failed_fields(StudentCreateSchema(), data) == {"_schema": ["Expected an object."]}


# --- StudentUpdateSchema ---------------------------------------------------


@pytest.mark.parametrize(
    ("data", "loaded"),
    [
        ({"name": " Bia "}, {"name": "Bia"}),
        ({"email": "BIA@Example.com"}, {"email": "bia@example.com"}),
        ({"course": "Maths", "name": "Bia"}, {"course": "Maths", "name": "Bia"}),
    ],
)
def test_update_is_partial(data, loaded):
    assert load(StudentUpdateSchema(), data) == loaded


def test_update_rejects_empty():
    assert set(failed_fields(StudentUpdateSchema(), {})) == {"_schema"}


@pytest.mark.parametrize(
    ("data", "field"),
    [({"name": ""}, "name"), ({"email": "bad"}, "email"), ({"id": 3}, "id"), ({"status": "active"}, "status")],
)
def test_update_validates_given_fields(data, field):
    assert set(failed_fields(StudentUpdateSchema(), data)) == {field}


# --- StatusChangeSchema ----------------------------------------------------


def test_status_change_valid_with_defaults():
    assert load(StatusChangeSchema(), {"student_id": 3, "status": "active"}) == {
        "student_id": 3,
        "status": "active",
        "reason": None,
        "actor": None,
        "idempotency_key": None,
        "request_id": None,
        "course": None,
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"status": "graduated"}, "status"),
        ({"status": "ACTIVE"}, "status"),
        ({"status": None}, "status"),
        ({"student_id": 0}, "student_id"),
        ({"student_id": -1}, "student_id"),
        ({"student_id": "3"}, "student_id"),  # strict: no coercion from strings
        ({"student_id": 3.0}, "student_id"),
        ({"student_id": True}, "student_id"),
        ({"student_id": None}, "student_id"),
        ({"reason": "x" * 1001}, "reason"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 201}, "idempotency_key"),
        ({"request_id": "not-a-uuid"}, "request_id"),
        ({"priority": "high"}, "priority"),
    ],
)
def test_status_change_rejects(changes, field):
    data = {"student_id": 3, "status": "active", **changes}

    assert set(failed_fields(StatusChangeSchema(), data)) == {field}


def test_status_change_requires_student_and_status():
    assert set(failed_fields(StatusChangeSchema(), {})) == {"student_id", "status"}


@pytest.mark.parametrize("value", [0, -5, True, "1", 1.5, None, 2**31, 10**20])
def test_positive_id_rejects(value):
    with pytest.raises(ValidationFailed) as info:
        positive_id(value)
    assert info.value.details == {"student_id": ["Must be an integer from 1 to 2147483647."]}


def test_positive_id_accepts():
    assert positive_id(12) == 12


# --- ListStudentsSchema ----------------------------------------------------


def test_list_defaults():
    assert load(ListStudentsSchema(), {}) == {"status": None, "course": None, "limit": DEFAULT_LIMIT, "cursor": None}


@pytest.mark.parametrize(("limit", "loaded"), [(1, 1), (500, 500), ("20", 20)])
def test_list_limit_within_bounds(limit, loaded):
    assert load(ListStudentsSchema(), {"limit": limit})["limit"] == loaded


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"status": "graduated"}, "status"),
        ({"course": ""}, "course"),
        ({"page": 2}, "page"),
    ],
)
def test_list_rejects(data, field):
    assert set(failed_fields(ListStudentsSchema(), data)) == {field}


def test_list_accepts_a_status_filter():
    assert load(ListStudentsSchema(), {"status": "suspended"})["status"] == "suspended"


# --- cursors -----------------------------------------------------------------


@pytest.mark.parametrize("last_id", [1, 2, 99, 123456789])
def test_cursor_round_trip(last_id):
    cursor = encode_cursor(last_id)

    assert "=" not in cursor
    assert decode_cursor(cursor) == last_id


@pytest.mark.parametrize("cursor", [None, ""])
def test_no_cursor_means_first_page(cursor):
    assert decode_cursor(cursor) is None


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    ["!!!", "a", "@@@@", "é", _b64("after:"), _b64("after:x"), _b64("before:3"), _b64("3"), _b64("after:1.5")],
)
def test_invalid_cursor(cursor):
    with pytest.raises(ValidationFailed) as info:
        decode_cursor(cursor)
    assert info.value.details == {"cursor": ["Invalid cursor."]}


@pytest.mark.parametrize(
    ("rows", "items", "more"), [([1, 2, 3], [1, 2], True), ([1, 2], [1, 2], False), ([], [], False)]
)
def test_page_splits_rows(rows, items, more):
    class Row:
        def __init__(self, id_):
            self.id = id_

    got, cursor = page([Row(i) for i in rows], limit=2)

    assert [row.id for row in got] == items
    assert cursor == (encode_cursor(items[-1]) if more else None)
