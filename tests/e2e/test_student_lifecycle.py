"""The whole path through HTTP, the services and the events: a student is
created, moves through its lifecycle, is edited and deleted."""

from __future__ import annotations

from tests.e2e.support import System, assert_error, poll


def test_student_lifecycle_over_http(system: System, unique: str) -> None:
    course = f"course-{unique}"
    created = system.post(
        "/students", json={"name": "Ada Lovelace", "email": f"Ada.{unique}@Example.org", "course": course}
    )
    assert created.status_code == 201, created.text
    student = created.json()
    student_id = student["id"]
    assert created.headers["Location"] == f"/students/{student_id}"
    assert created.headers["ETag"] == f'"{student["version"]}.{student["status_version"]}"'
    assert student["email"] == f"ada.{unique}@example.org"
    assert student["status"] == "enrolled"

    fetched = system.get(created.headers["Location"])
    assert fetched.status_code == 200, fetched.text
    assert fetched.json() == student
    assert fetched.headers["ETag"] == created.headers["ETag"]

    # enrolled -> active, asynchronously
    accepted = system.post(
        f"/students/{student_id}/status", json={"status": "active", "reason": "start"}, headers={"X-Actor": "registrar"}
    )
    assert accepted.status_code == 202, accepted.text
    request = accepted.json()
    request_id = request["request_id"]
    assert request["state"] == "pending"
    assert request["student_id"] == student_id and request["status"] == "active"
    assert accepted.headers["Location"] == f"/status-requests/{request_id}"

    def fetch_request() -> dict:
        response = system.get(accepted.headers["Location"])
        assert response.status_code == 200, response.text
        return response.json()

    applied = poll(fetch_request, lambda r: r["state"] != "pending")
    assert applied["state"] == "applied", applied
    assert applied["from_status"] == "enrolled"

    [entry] = system.history(student_id)
    assert (entry["from_status"], entry["to_status"]) == ("enrolled", "active")
    # the actor is the key's name; X-Actor is kept next to it, never instead of it
    assert (entry["request_id"], entry["reason"]) == (request_id, "start")
    assert (entry["actor"], entry["on_behalf_of"]) == ("e2e tests", "registrar")

    # the students' read copy follows the status service's events
    poll(lambda: system.listed(status="active", course=course), lambda items: [s["id"] for s in items] == [student_id])
    assert system.listed(status="enrolled", course=course) == []

    # active -> completed, then completed is final
    completed = system.settled_request(system.request_status(student_id, "completed", "graduated")["request_id"])
    assert completed["state"] == "applied", completed
    refused = system.settled_request(system.request_status(student_id, "active", "again")["request_id"])
    assert refused["state"] == "rejected", refused
    assert refused["error"]["code"] == "INVALID_TRANSITION", refused
    history = system.history(student_id)
    assert [(h["from_status"], h["to_status"]) for h in history] == [("enrolled", "active"), ("active", "completed")]
    poll(lambda: system.get(f"/students/{student_id}").json()["status"], lambda status: status == "completed")

    # optimistic concurrency on profile edits
    current = system.get(f"/students/{student_id}")
    version = current.json()["version"]
    patched = system.patch(
        f"/students/{student_id}", json={"name": "Ada King"}, headers={"If-Match": current.headers["ETag"]}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["version"] == version + 1
    assert patched.json()["name"] == "Ada King"
    assert patched.headers["ETag"] == f'"{version + 1}.{patched.json()["status_version"]}"'
    assert system.get(f"/students/{student_id}").json()["name"] == "Ada King"

    deleted = system.delete(f"/students/{student_id}")
    assert deleted.status_code == 204, deleted.text
    assert deleted.content == b""
    assert_error(system.get(f"/students/{student_id}"), 404, "STUDENT_NOT_FOUND")
    assert_error(system.delete(f"/students/{student_id}"), 404, "STUDENT_NOT_FOUND")
