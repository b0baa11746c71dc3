"""Status request ids the gateway signs (gateway.request_ids)."""

from __future__ import annotations

import os
import time
import uuid

import pytest

from gateway import request_ids

SECRET = "unit-secret"


@pytest.mark.parametrize(("key", "version"), [(None, 7), ("key-1", 4)])
def test_issued_id_is_a_uuid_that_verifies_only_with_its_secret(key, version):
    request_id = request_ids.issue(SECRET, 7, key)

    parsed = uuid.UUID(request_id)
    assert str(parsed) == request_id
    assert parsed.version == version
    assert parsed.variant == uuid.RFC_4122
    assert request_ids.is_issued(SECRET, request_id)
    assert not request_ids.is_issued("another-secret", request_id)


@pytest.mark.parametrize("key", [None, "key-1"])
@pytest.mark.parametrize("position", [0, 9, 10, 20, 27, 28, 35])  # body and MAC, first and last hex digit
def test_tampered_id_fails(position, key):
    request_id = request_ids.issue(SECRET, 7, key)
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


def test_without_a_key_every_id_differs_and_they_sort_as_issued():
    issued = [request_ids.issue(SECRET, 7) for _ in range(10_000)]  # more than 4,096 in a millisecond

    assert len(set(issued)) == len(issued)
    assert sorted(issued) == issued, "time-ordered: written at the end of an index, not all over it"
    assert all(request_ids.is_issued(SECRET, request_id) for request_id in issued)
    millis = uuid.UUID(issued[0]).int >> 80
    assert abs(millis - time.time() * 1000) < 60_000


def tag(request_id: str) -> int:
    return uuid.UUID(request_id).int >> 32 & (1 << 30) - 1


def test_another_process_issues_other_ids_in_the_same_millisecond():
    """Two processes count from the same (millisecond, counter); their tags keep the ids apart."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its ids, then out
        os.write(write, ",".join(request_ids.issue(SECRET, 7) for _ in range(2_000)).encode())
        os._exit(0)
    os.close(write)
    mine = [request_ids.issue(SECRET, 7) for _ in range(2_000)]
    with os.fdopen(read) as pipe:
        theirs = pipe.read().split(",")
    os.waitpid(pid, 0)

    assert len(theirs) == 2_000 and not set(mine) & set(theirs)
    [my_tag], [their_tag] = {tag(r) for r in mine}, {tag(r) for r in theirs}
    assert my_tag != their_tag, "each process has a tag of its own"
    assert all(request_ids.is_issued(SECRET, request_id) for request_id in theirs)


@pytest.mark.parametrize(
    "value",
    [
        *("", "garbage", "not-a-uuid-at-all", str(uuid.uuid4()), "00000000-0000-0000-0000-000000000000", None, 42),
        "0190a6c4-1c2b-7000-8000-000000000000",  # a version 7 UUID without the MAC
    ],
)
def test_garbage_is_not_issued(value):
    assert request_ids.is_issued(SECRET, value) is False
