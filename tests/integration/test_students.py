"""Every students RPC against a real broker and database, and a student's language over HTTP."""

from __future__ import annotations

import pytest
import requests

from gateway.service import GatewayService
from services.exceptions import EmailAlreadyExists, StudentNotFound, ValidationFailed, VersionMismatch
from services.status import StatusService
from services.students import StudentsService
from tests.e2e.support import bearer, create_api_key, free_port
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


def test_a_student_s_language_through_create_update_get_and_list(rpc, unique):
    student = rpc.students.create_student(
        {"name": "João", "email": f"joao.{unique}@escola.example", "course": f"course-{unique}", "language": "pt-BR"}
    )
    assert student["language"] == "pt_BR", "stored as one of the languages"
    assert rpc.students.get_student(student["id"])["language"] == "pt_BR"
    assert rpc.students.get_students([student["id"]])[0]["language"] == "pt_BR"
    assert rpc.students.list_students(course=f"course-{unique}")["items"][0]["language"] == "pt_BR"

    assert rpc.students.update_student(student["id"], {"language": "en-US"})["language"] == "en"
    renamed = rpc.students.update_student(student["id"], {"name": "João Conceição"})
    assert renamed["language"] == "en", "a change of another field leaves it"
    assert rpc.students.update_student(student["id"], {"language": None})["language"] is None
    assert new_student(rpc, unique, 1)["language"] is None, "none given: the default language"

    for language in ("fr", "pt-BR ", "", 5):
        with pytest.raises(ValidationFailed) as invalid:
            rpc.students.update_student(student["id"], {"language": language})
        assert list(invalid.value.details) == ["language"]
    assert rpc.students.get_student(student["id"])["version"] == 4, "refused changes change nothing"


@pytest.fixture
def gateway(runner_factory, config, db_uris):
    port = free_port()
    runner = runner_factory(
        {**config, "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}"}, GatewayService, StudentsService, StatusService
    )
    runner.start()
    _, key = create_api_key(db_uris, "language-test", ["students:read", "students:write", "status:write"])
    return f"http://127.0.0.1:{port}", bearer(key)


def test_a_student_s_language_over_http(gateway, unique):
    base, auth = gateway
    body = {"name": "Ana", "email": f"ana.{unique}@escola.example", "course": "Física", "language": "pt"}
    created = requests.post(f"{base}/students", json=body, headers=auth, timeout=10)
    assert created.status_code == 201, created.text
    assert created.json()["language"] == "pt_BR"
    url = f"{base}{created.headers['Location']}"
    assert requests.get(url, headers=auth, timeout=10).json()["language"] == "pt_BR"

    changed = requests.patch(url, json={"language": "en"}, headers={**auth, "If-Match": '"1"'}, timeout=10)
    assert changed.status_code == 200 and changed.json()["language"] == "en"
    listed = requests.get(f"{base}/students", params={"course": "Física"}, headers=auth, timeout=10).json()
    assert [s["language"] for s in listed["items"] if s["email"] == body["email"]] == ["en"]

    for method, target, payload in [
        ("POST", f"{base}/students", {**body, "email": f"other.{unique}@escola.example", "language": "klingon"}),
        ("PATCH", url, {"language": "fr-FR"}),
        ("POST", f"{base}/api/v1/certificate/", {**body, "email": f"legacy.{unique}@escola.example", "language": 1}),
    ]:
        refused = requests.request(method, target, json=payload, headers=auth, timeout=10)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == "VALIDATION_ERROR" and list(refused.json()["details"]) == ["language"]
    assert requests.get(url, headers=auth, timeout=10).json()["language"] == "en"


def test_the_original_endpoint_creates_the_student_with_their_language(gateway, unique):
    base, auth = gateway
    body = {"name": "Bia", "email": f"bia.{unique}@escola.example", "course": "Química", "language": "pt-BR"}
    accepted = requests.post(f"{base}/api/v1/certificate/", json=body, headers=auth, timeout=10)
    assert accepted.status_code == 202, accepted.text
    student = accepted.json()["student"]
    assert student["language"] == "pt_BR"
    assert requests.get(f"{base}/students/{student['id']}", headers=auth, timeout=10).json()["language"] == "pt_BR"
