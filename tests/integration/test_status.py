"""The status flow across both services, on a real broker and database."""

from __future__ import annotations

import itertools
import random
import uuid

import eventlet
import pytest
from nameko.standalone.events import event_dispatcher
from nameko.standalone.rpc import ClusterRpcProxy

from services import lifecycle
from services.exceptions import IdempotencyKeyReused, StudentNotFound, ValidationFailed
from tests.integration.conftest import settled, wait_for
from tests.integration.test_students import new_student


def test_request_applied_with_history_and_event(rpc, unique, received):
    student = new_student(rpc, unique)
    request = rpc.status.request_status_change(
        student["id"], "active", reason="term starts", actor="registrar", on_behalf_of="ana.lima"
    )
    assert request["state"] == "pending" and request["status"] == "active"
    assert (request["actor"], request["on_behalf_of"]) == ("registrar", "ana.lima")

    done = wait_for(lambda: settled(rpc, request["request_id"]))
    assert done["state"] == "applied" and done["from_status"] == "enrolled" and done["error"] is None
    assert (done["actor"], done["on_behalf_of"]) == ("registrar", "ana.lima")

    history = rpc.status.get_status_history(student["id"])["items"]
    assert [
        (h["from_status"], h["to_status"], h["reason"], h["actor"], h["on_behalf_of"], h["request_id"]) for h in history
    ] == [("enrolled", "active", "term starts", "registrar", "ana.lima", request["request_id"])]
    assert rpc.status.get_current_status(student["id"])["status"] == "active"

    event = wait_for(lambda: [e for e in received if e["request_id"] == request["request_id"]])[0]
    assert event["student_id"] == student["id"]
    assert (event["from_status"], event["to_status"], event["reason"], event["actor"]) == (
        "enrolled",
        "active",
        "term starts",
        "registrar",
    )
    assert event["occurred_at"] == history[0]["occurred_at"]
    wait_for(lambda: rpc.students.get_student(student["id"])["status"] == "active")


def test_on_behalf_of_defaults_to_none_and_keeps_positional_callers_working(rpc, unique):
    student = new_student(rpc, unique)
    # the arguments before on_behalf_of, by position, as callers wrote them before it existed
    request = rpc.status.request_status_change(student["id"], "active", "term starts", "registrar", unique, None)
    assert (request["actor"], request["on_behalf_of"], request["idempotency_key"]) == ("registrar", None, unique)

    wait_for(lambda: settled(rpc, request["request_id"]))
    [entry] = rpc.status.get_status_history(student["id"])["items"]
    assert (entry["actor"], entry["on_behalf_of"]) == ("registrar", None)


def test_too_long_on_behalf_of_is_refused_everywhere(rpc, unique):
    student = new_student(rpc, unique)
    too_long = "o" * 201
    calls = [
        lambda: rpc.status.request_status_change(student["id"], "active", actor="registrar", on_behalf_of=too_long),
        lambda: rpc.status.submit_job([{"student_id": student["id"], "status": "active"}], on_behalf_of=too_long),
        lambda: rpc.status.create_job(idempotency_key=unique, actor="registrar", on_behalf_of=too_long),
    ]
    for call in calls:
        with pytest.raises(ValidationFailed) as refused:
            call()
        assert set(refused.value.details) == {"on_behalf_of"}
    assert rpc.status.get_status_history(student["id"])["items"] == []


def test_rejections_and_noop_leave_no_history(rpc, unique):
    student = new_student(rpc, unique)
    invalid = rpc.status.request_status_change(student["id"], "completed")
    same = rpc.status.request_status_change(student["id"], "enrolled")
    unknown = rpc.status.request_status_change(10**7, "active")

    invalid = wait_for(lambda: settled(rpc, invalid["request_id"]))
    assert invalid["state"] == "rejected" and invalid["error"]["code"] == "INVALID_TRANSITION"
    same = wait_for(lambda: settled(rpc, same["request_id"]))
    assert same["state"] == "applied" and same["error"] is None
    unknown = wait_for(lambda: settled(rpc, unknown["request_id"]))
    assert unknown["state"] == "rejected" and unknown["error"]["code"] == "STUDENT_NOT_FOUND"
    assert rpc.status.get_status_history(student["id"])["items"] == []

    with pytest.raises(ValidationFailed) as bad:
        rpc.status.request_status_change(student["id"], "graduated")
    assert "status" in bad.value.details
    with pytest.raises(StudentNotFound):
        rpc.status.get_current_status(10**7)


def test_deleted_student_requests_are_rejected(rpc, unique):
    student = new_student(rpc, unique)
    rpc.students.delete_student(student["id"])

    def rejected():
        request = rpc.status.request_status_change(student["id"], "active", idempotency_key=uuid.uuid4().hex)
        request = wait_for(lambda: settled(rpc, request["request_id"]))
        return (request["error"] or {}).get("code") == "STUDENT_NOT_FOUND"

    wait_for(rejected)  # once student_deleted has reached the status service


def test_idempotency_key_repeat_is_one_change(rpc, unique):
    student = new_student(rpc, unique)
    first = rpc.status.request_status_change(student["id"], "active", idempotency_key=unique)
    again = rpc.status.request_status_change(student["id"], "active", idempotency_key=unique)
    assert again["request_id"] == first["request_id"]
    wait_for(lambda: settled(rpc, first["request_id"]))
    after = rpc.status.request_status_change(student["id"], "active", idempotency_key=unique)
    assert after["request_id"] == first["request_id"] and after["state"] == "applied"
    with pytest.raises(IdempotencyKeyReused):
        rpc.status.request_status_change(student["id"], "withdrawn", idempotency_key=unique)
    assert len(rpc.status.get_status_history(student["id"])["items"]) == 1


def test_gateway_event_path_is_idempotent_by_request_id(config, rpc, unique):
    student = new_student(rpc, unique)
    request_id = str(uuid.uuid4())
    dispatch = event_dispatcher(config)
    payload = {
        "request_id": request_id,
        "student_id": student["id"],
        "status": "active",
        "reason": "via event",
        "actor": "http",
        "idempotency_key": None,
    }
    for _ in range(3):  # redelivered / repeated
        dispatch("gateway", "status_change_requested", payload)
    dispatch("gateway", "status_change_requested", {"garbage": True})  # parked, never blocks the queue

    done = wait_for(lambda: settled(rpc, request_id))
    assert done["state"] == "applied" and done["reason"] == "via event"
    assert [h["request_id"] for h in rpc.status.get_status_history(student["id"])["items"]] == [request_id]
    parked = wait_for(rpc.status.list_dead_letters)
    assert len(parked) == 1 and parked[0]["payload"] == {"garbage": True}
    assert parked[0]["attempts"] == 1, "a validation failure is not retried"
    assert parked[0]["error"].startswith("ValidationFailed") and parked[0]["routing_key"] == "status_change_requested"
    assert parked[0]["handler"] == "status.handle_status_change_requested"


def test_gateway_event_path_records_on_behalf_of_and_reads_old_commands(config, rpc, unique):
    first, second = new_student(rpc, unique, 1), new_student(rpc, unique, 2)
    old = {"request_id": str(uuid.uuid4()), "student_id": first["id"], "status": "active", "actor": "http"}
    new = {
        "request_id": str(uuid.uuid4()),
        "student_id": second["id"],
        "status": "active",
        "actor": "key:webapp",
        "on_behalf_of": "ana.lima",
        "idempotency_key": unique,  # recorded through the other path (one by one)
    }
    event_dispatcher(config)("gateway", "status_change_requested", {"requests": [old, new]})

    for command, expected in ((old, ("http", None)), (new, ("key:webapp", "ana.lima"))):
        done = wait_for(lambda command=command: settled(rpc, command["request_id"]))
        assert done["state"] == "applied" and (done["actor"], done["on_behalf_of"]) == expected
        [entry] = rpc.status.get_status_history(command["student_id"])["items"]
        assert (entry["actor"], entry["on_behalf_of"]) == expected
    assert rpc.status.list_dead_letters() == []


def job_done(rpc, job_id: str) -> dict | None:
    job = rpc.status.get_job(job_id)
    return job if job["state"] == "done" else None


def test_a_job_carries_on_behalf_of_to_its_requests_and_history(rpc, unique):
    ana, bia = new_student(rpc, unique, 1), new_student(rpc, unique, 2)
    rows = [{"student_id": ana["id"], "status": "active"}, {"email": bia["email"], "status": "active"}]

    job = rpc.status.submit_job(rows, idempotency_key=unique, actor="key:registry", on_behalf_of="ana.lima")
    assert (job["actor"], job["on_behalf_of"]) == ("key:registry", "ana.lima")

    done = wait_for(lambda: job_done(rpc, job["job_id"]))
    assert (done["applied"], done["actor"], done["on_behalf_of"]) == (2, "key:registry", "ana.lima")
    for student in (ana, bia):
        [entry] = rpc.status.get_status_history(student["id"])["items"]
        assert (entry["actor"], entry["on_behalf_of"]) == ("key:registry", "ana.lima")
        request = rpc.status.get_status_request(entry["request_id"])
        assert (request["actor"], request["on_behalf_of"]) == ("key:registry", "ana.lima")


def test_a_streamed_job_carries_on_behalf_of_and_defaults_to_none(rpc, unique):
    student = new_student(rpc, unique)
    for on_behalf_of, target in (("ana.lima", "active"), (None, "suspended")):
        upload = rpc.status.create_job(actor="key:registry", on_behalf_of=on_behalf_of)
        rpc.status.add_job_rows(upload["job_id"], upload["upload"], [[1, student["id"], target, None]], [])
        rpc.status.seal_job(upload["job_id"], upload["upload"], 1)
        done = wait_for(lambda upload=upload: job_done(rpc, upload["job_id"]))
        assert (done["applied"], done["actor"], done["on_behalf_of"]) == (1, "key:registry", on_behalf_of)

    history = rpc.status.get_status_history(student["id"])["items"]
    assert [(h["to_status"], h["actor"], h["on_behalf_of"]) for h in history] == [
        ("active", "key:registry", "ana.lima"),
        ("suspended", "key:registry", None),
    ]


def test_history_pages(rpc, unique):
    student = new_student(rpc, unique)
    for target in ("active", "suspended", "active", "suspended", "active"):
        request = rpc.status.request_status_change(student["id"], target)
    wait_for(lambda: settled(rpc, request["request_id"]))
    first = rpc.status.get_status_history(student["id"], limit=2)
    second = rpc.status.get_status_history(student["id"], limit=2, cursor=first["next_cursor"])
    third = rpc.status.get_status_history(student["id"], limit=2, cursor=second["next_cursor"])
    versions = [h["version"] for page in (first, second, third) for h in page["items"]]
    assert versions == [1, 2, 3, 4, 5] and third["next_cursor"] is None


def test_concurrent_requests_on_one_student_form_a_valid_chain(config, rpc, unique):
    """Many callers at once, through both ways in: no lost update, no
    transition from a stale status."""
    student = new_student(rpc, unique)
    rng = random.Random(unique)
    targets = [rng.choice(["active", "active", "suspended", "suspended", "withdrawn", "enrolled"]) for _ in range(80)]
    targets[-1] = "completed"
    dispatch = event_dispatcher(config)

    def submit(chunk: list[tuple[int, str]]) -> list[str]:
        ids = []
        with ClusterRpcProxy(config, timeout=15) as proxy:
            for n, target in chunk:
                if n % 2:
                    ids.append(
                        proxy.status.request_status_change(student["id"], target, actor=f"caller-{n}")["request_id"]
                    )
                else:
                    request_id = str(uuid.uuid4())
                    dispatch(
                        "gateway",
                        "status_change_requested",
                        {"request_id": request_id, "student_id": student["id"], "status": target, "actor": "http"},
                    )
                    ids.append(request_id)
        return ids

    chunks = [list(enumerate(targets))[i::8] for i in range(8)]
    pool = eventlet.GreenPool(8)
    request_ids = [rid for ids in pool.imap(submit, chunks) for rid in ids]
    assert len(set(request_ids)) == len(targets)

    requests = [wait_for(lambda rid=rid: settled(rpc, rid), timeout=30) for rid in request_ids]
    history = rpc.status.get_status_history(student["id"], limit=500)["items"]

    assert history, "at least the first transition from enrolled is allowed"
    assert history[0]["from_status"] == "enrolled"
    for before, after in itertools.pairwise(history):
        assert after["from_status"] == before["to_status"]
    assert all(lifecycle.is_allowed(h["from_status"], h["to_status"]) for h in history)
    assert [h["version"] for h in history] == list(range(1, len(history) + 1))
    changed = [r for r in requests if r["state"] == "applied" and r["from_status"] != r["status"]]
    assert sorted(h["request_id"] for h in history) == sorted(r["request_id"] for r in changed)
    assert {r["state"] for r in requests} <= {"applied", "rejected"}
    assert rpc.status.get_current_status(student["id"])["status"] == history[-1]["to_status"]
