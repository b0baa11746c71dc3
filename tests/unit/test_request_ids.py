"""Status request ids the gateway signs (gateway.request_ids)."""

from __future__ import annotations

import uuid

import pytest

from gateway import request_ids

SECRET = "unit-secret"


@pytest.mark.parametrize("key", [None, "key-1"])
def test_issued_id_is_a_uuid4_that_verifies_only_with_its_secret(key):
    request_id = request_ids.issue(SECRET, 7, key)

    parsed = uuid.UUID(request_id)
    assert str(parsed) == request_id
    assert parsed.version == 4
    assert parsed.variant == uuid.RFC_4122
    assert request_ids.is_issued(SECRET, request_id)
    assert not request_ids.is_issued("another-secret", request_id)


@pytest.mark.parametrize("position", [0, 9, 10, 35])  # body and MAC, first and last hex digit
def test_tampered_id_fails(position):
    request_id = request_ids.issue(SECRET, 7, "key-1")
    if request_id[position] == "-":
        pytest.fail("position must name a hex digit")
    flipped = format(int(request_id[position], 16) ^ 0x1, "x")
    tampered = request_id[:position] + flipped + request_id[position + 1 :]

    assert not request_ids.is_issued(SECRET, tampered)


def test_same_student_and_key_give_the_same_id():
    assert request_ids.issue(SECRET, 7, "key-1") == request_ids.issue(SECRET, 7, "key-1")


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((7, "key-1"), (7, "key-2")),
        ((7, "key-1"), (8, "key-1")),
        ((1, "2\x00x"), (12, "x")),  # the separator keeps (student, key) pairs apart
    ],
)
def test_different_student_or_key_give_different_ids(a, b):
    assert request_ids.issue(SECRET, *a) != request_ids.issue(SECRET, *b)


def test_same_key_under_another_secret_gives_another_id():
    assert request_ids.issue(SECRET, 7, "key-1") != request_ids.issue("another-secret", 7, "key-1")


def test_without_a_key_every_id_differs():
    ids = {request_ids.issue(SECRET, 7) for _ in range(20)}

    assert len(ids) == 20
    assert all(request_ids.is_issued(SECRET, request_id) for request_id in ids)


@pytest.mark.parametrize(
    "value",
    ["", "garbage", "not-a-uuid-at-all", str(uuid.uuid4()), "00000000-0000-0000-0000-000000000000", None, 42],
)
def test_garbage_is_not_issued(value):
    assert request_ids.is_issued(SECRET, value) is False
