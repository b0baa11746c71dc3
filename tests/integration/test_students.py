"""Every students RPC against a real broker and database."""

from __future__ import annotations

import pytest

from services.exceptions import EmailAlreadyExists, StudentNotFound, ValidationFailed, VersionMismatch
from tests.integration.conftest import wait_for


def new_student(rpc, unique: str, n: int = 0, course: str | None = None) -> dict:
    return rpc.students.create_student(
        {"name": f"Aluno {n}", "email": f"a{n}.{unique}@school.example", "course": course or f"course-{unique}"}
    )


def test_create_get_update_delete(rpc, unique):
    student = new_student(rpc, unique)
    assert student["status"] == "enrolled" and student["version"] == 1
    assert rpc.students.get_student(student["id"]) == student

    updated = rpc.students.update_student(student["id"], {"name": "João Conceição"}, expected_version=1)
    assert updated["name"] == "João Conceição" and updated["version"] == 2

    with pytest.raises(VersionMismatch) as stale:
        rpc.students.update_student(student["id"], {"course": "x"}, expected_version=1)
    assert stale.value.details["current_version"] == 2

    assert rpc.students.delete_student(student["id"])["id"] == student["id"]
    with pytest.raises(StudentNotFound) as missing:
        rpc.students.get_student(student["id"])
    assert missing.value.code == "STUDENT_NOT_FOUND" and missing.value.details == {"student_id": student["id"]}


def test_typed_errors(rpc, unique):
    student = new_student(rpc, unique)
    with pytest.raises(EmailAlreadyExists):
        rpc.students.create_student({"name": "B", "email": student["email"].upper(), "course": "c"})
    other = new_student(rpc, unique, 1)
    with pytest.raises(EmailAlreadyExists):
        rpc.students.update_student(other["id"], {"email": student["email"]})
    with pytest.raises(ValidationFailed) as invalid:
        rpc.students.create_student({"name": "", "email": "not-an-email"})
    assert set(invalid.value.details) == {"name", "email", "course"}
    with pytest.raises(ValidationFailed):
        rpc.students.get_student("1")
    with pytest.raises(StudentNotFound):
        rpc.students.update_student(10**6, {"name": "x"})
    with pytest.raises(StudentNotFound):
        rpc.students.delete_student(10**6)


def test_list_keyset_pages_are_stable_while_rows_are_inserted(rpc, unique):
    course = f"course-{unique}"
    ids = [new_student(rpc, unique, n, course)["id"] for n in range(5)]
    new_student(rpc, unique, 99, course="elsewhere-" + unique)

    first = rpc.students.list_students(course=course, limit=2)
    assert [s["id"] for s in first["items"]] == ids[:2]
    late = new_student(rpc, unique, 5, course)["id"]  # inserted between pages
    second = rpc.students.list_students(course=course, limit=2, cursor=first["next_cursor"])
    third = rpc.students.list_students(course=course, limit=2, cursor=second["next_cursor"])
    assert [s["id"] for s in second["items"]] == ids[2:4]
    assert [s["id"] for s in third["items"]] == [ids[4], late]
    assert third["next_cursor"] is None

    with pytest.raises(ValidationFailed) as too_many:
        rpc.students.list_students(limit=501)
    assert "limit" in too_many.value.details
    with pytest.raises(ValidationFailed) as bad_cursor:
        rpc.students.list_students(cursor="garbage")
    assert "cursor" in bad_cursor.value.details


def test_list_by_status_uses_the_read_copy(rpc, unique):
    course = f"course-{unique}"
    student = new_student(rpc, unique, 0, course)
    new_student(rpc, unique, 1, course)
    rpc.status.request_status_change(student["id"], "active", reason="term starts")

    def active_ids():
        return [s["id"] for s in rpc.students.list_students(status="active", course=course)["items"]]

    assert wait_for(active_ids) == [student["id"]]
    assert [s["id"] for s in rpc.students.list_students(status="enrolled", course=course)["items"]] != [student["id"]]


def test_students_are_found_by_the_start_of_their_name_any_case_wildcards_literal(rpc, unique):
    names = [f"Ana {unique}", f"ana_{unique}", f"Anabela {unique}", f"Bruna {unique}", f"An%a {unique}"]
    created = {
        name: rpc.students.create_student({"name": name, "email": f"n{i}.{unique}@school.example", "course": "c"})
        for i, name in enumerate(names)
    }

    def found(prefix: str) -> set[str]:
        return {s["name"] for s in rpc.students.list_students(name=prefix, limit=500)["items"] if unique in s["name"]}

    assert found("ana") == {f"Ana {unique}", f"ana_{unique}", f"Anabela {unique}"}
    assert found("ANA_") == {f"ana_{unique}"}  # "_" is a character, not any character
    assert found("an%") == {f"An%a {unique}"}  # "%" likewise
    assert found(f"bruna {unique}") == {f"Bruna {unique}"}
    assert created[f"Bruna {unique}"]["name"] == f"Bruna {unique}"
