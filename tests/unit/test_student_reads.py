"""The gateway's read copy of students: the newer profile and the newer status win, whatever
order they come in; deleted students stay deleted; a dropped copy is not refilled by a read
begun before; the copy is bounded."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from gateway.student_reads import StudentReads


def student(student_id: int = 1, version: int = 1, status: str = "enrolled", status_version: int = 1) -> dict:
    return {"id": student_id, "name": "Ada", "version": version, "status": status, "status_version": status_version}


@pytest.fixture
def reads() -> StudentReads:
    return make_reads(100)


def make_reads(size: int) -> StudentReads:
    reads = StudentReads()
    reads.container = SimpleNamespace(config={"STUDENT_READ_CACHE_SIZE": size})
    reads.setup()
    reads.restart(live=True)  # as the consumer does once its queues exist
    return reads


def test_an_older_profile_never_replaces_a_newer_one(reads):
    reads.put({**student(version=3), "name": "New"})
    reads.put({**student(version=2), "name": "Old"})  # an event that arrives late
    assert reads.get(1).student["name"] == "New"
    assert reads.fill({**student(version=1), "name": "Older"}, reads.generation).student["name"] == "New"


def test_a_status_heard_before_the_student_is_merged_into_its_first_read(reads):
    reads.status_changed(1, "active", 5)
    assert reads.get(1) is None  # a status alone is no student
    entry = reads.fill(student(status="enrolled", status_version=1), reads.generation)
    assert (entry.student["status"], entry.student["status_version"]) == ("active", 5)
    assert reads.get(1).etag == '"1.5"'


def test_an_older_status_is_ignored_and_a_newer_profile_keeps_the_newer_status(reads):
    reads.put(student(status="active", status_version=5))
    reads.status_changed(1, "suspended", 4)
    assert reads.get(1).student["status"] == "active"
    reads.put({**student(version=2, status="enrolled", status_version=3), "name": "Changed"})
    assert reads.get(1).student == {**student(version=2, status="active", status_version=5), "name": "Changed"}
    reads.status_changed(1, "completed", 6)
    assert (reads.get(1).student["status"], reads.get(1).etag) == ("completed", '"2.6"')


def test_a_deleted_student_stays_deleted(reads):
    reads.put(student())
    reads.deleted(1)
    assert reads.get(1) is None
    reads.put(student(version=2))  # an update event that arrives after the deletion's
    reads.status_changed(1, "active", 2)
    assert reads.fill(student(), reads.generation).student == student()  # a read from before it: answered
    assert reads.get(1) is None  # ... not kept


def test_a_read_begun_before_the_copy_was_dropped_does_not_refill_it(reads):
    begun = reads.generation
    reads.restart(live=True)  # reconnected: events may have been missed
    assert reads.fill(student(), begun).student == student()
    assert reads.get(1) is None
    reads.fill(student(), reads.generation)
    assert reads.get(1) is not None


def test_nothing_is_served_or_kept_while_the_events_are_not_followed(reads):
    reads.put(student())
    reads.restart(live=False)  # the connection is lost
    assert reads.get(1) is None
    reads.put(student())
    reads.fill(student(), reads.generation)
    reads.restart(live=True)
    assert reads.get(1) is None


def test_the_least_recently_read_go_first():
    reads = make_reads(3)
    for student_id in (1, 2, 3):
        reads.put(student(student_id))
    reads.get(1)
    reads.put(student(4))
    assert [reads.get(i) is not None for i in (1, 2, 3, 4)] == [True, False, True, True]


def test_size_zero_keeps_nothing():
    reads = make_reads(0)
    reads.put(student())
    assert reads.get(1) is None and not reads.entries


def test_the_answer_is_the_student_as_json(reads):
    reads.put(student())
    assert reads.get(1).body == b'{"id":1,"name":"Ada","version":1,"status":"enrolled","status_version":1}'
