"""Repeating a status change over HTTP never changes the status twice, and a
request id the gateway handed out is always answered."""

from __future__ import annotations

import uuid

from tests.e2e.support import System, assert_error


def test_repeated_request_with_same_key_is_one_change(system: System, unique: str) -> None:
    student_id = system.create_student(unique)["id"]
    key = f"key-{unique}"
    path = f"/students/{student_id}/status"
    body = {"status": "active", "reason": "start"}

    first = system.post(path, json=body, headers={"Idempotency-Key": key})
    second = system.post(path, json=body, headers={"Idempotency-Key": key})
    assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)
    request_id = first.json()["request_id"]
    assert second.json()["request_id"] == request_id
    assert second.headers["Location"] == first.headers["Location"] == f"/status-requests/{request_id}"

    applied = system.settled_request(request_id)
    assert applied["state"] == "applied", applied
    assert applied["idempotency_key"] == key

    third = system.post(path, json=body, headers={"Idempotency-Key": key})
    assert third.status_code == 202, third.text
    assert third.json()["request_id"] == request_id
    assert third.json()["state"] == "applied"

    history = system.history(student_id)
    assert [(h["to_status"], h["request_id"]) for h in history] == [("active", request_id)]

    reused = system.post(path, json={"status": "withdrawn"}, headers={"Idempotency-Key": key})
    details = assert_error(reused, 409, "IDEMPOTENCY_KEY_REUSED")
    assert details["request_id"] == request_id
    assert len(system.history(student_id)) == 1


def test_issued_request_id_is_never_unknown(system: System, unique: str) -> None:
    student_id = system.create_student(unique)["id"]
    accepted = system.post(f"/students/{student_id}/status", json={"status": "withdrawn"})
    assert accepted.status_code == 202, accepted.text
    request_id = accepted.json()["request_id"]

    # straight after the 202, before the status service may have recorded it
    immediately = system.get(f"/status-requests/{request_id}")
    assert immediately.status_code == 200, immediately.text
    assert immediately.json()["request_id"] == request_id
    assert immediately.json()["state"] in ("pending", "applied")
    assert system.settled_request(request_id)["state"] == "applied"

    assert_error(system.get(f"/status-requests/{uuid.uuid4()}"), 404, "STATUS_REQUEST_NOT_FOUND")
    assert_error(system.get("/status-requests/not-a-uuid"), 404, "NOT_FOUND")  # request ids are UUIDs
