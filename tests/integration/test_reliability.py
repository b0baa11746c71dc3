"""Retries, dead letters and durable subscriptions, on a real broker."""

from __future__ import annotations

import uuid

from nameko.standalone.events import event_dispatcher
from nameko.testing.services import entrypoint_waiter
from sqlalchemy import create_engine, text

from services.exceptions import StudentNotFound
from services.students import StudentsService
from tests.integration.conftest import settled, wait_for
from tests.integration.test_students import new_student


def tracked(rpc, student_id: int) -> bool:
    try:
        return bool(rpc.status.get_current_status(student_id))
    except StudentNotFound:
        return False


def rename_table(uri: str, old: str, new: str) -> None:
    engine = create_engine(uri)
    with engine.begin() as connection:
        connection.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))
    engine.dispose()


def test_poison_event_is_parked_then_replayed_once(config, rpc, unique):
    """A handler that keeps failing (its table is gone): retried, parked with its
    error after the last attempt; once the cause is fixed, replay applies it once."""
    student = new_student(rpc, unique)
    wait_for(lambda: tracked(rpc, student["id"]))  # student_created has arrived
    status_db = config["DB_URIS"]["status:StatusBase"]
    request_id = str(uuid.uuid4())
    payload = {"request_id": request_id, "student_id": student["id"], "status": "active", "actor": "test"}

    rename_table(status_db, "status_requests", "status_requests_broken")
    try:
        dispatch = event_dispatcher(config, headers={"nameko.correlation_id": f"corr-{unique}"})
        dispatch("gateway", "status_change_requested", payload)
        parked = wait_for(rpc.status.list_dead_letters)
    finally:
        rename_table(status_db, "status_requests_broken", "status_requests")

    assert len(parked) == 1
    letter = parked[0]
    assert letter["attempts"] == config["EVENT_RETRY_ATTEMPTS"]
    assert "status_requests" in letter["error"] and letter["traceback"]
    assert letter["payload"] == payload
    assert (letter["exchange"], letter["routing_key"]) == ("gateway.events", "status_change_requested")
    assert letter["handler"] == "status.handle_status_change_requested"
    assert letter["correlation_id"] == f"corr-{unique}"
    assert rpc.status.list_dead_letters() == parked, "listing changes nothing"

    assert rpc.status.replay_dead_letters([letter["message_id"]]) == {
        "replayed": [letter["message_id"]],
        "not_replayable": [],
        "not_found": [],
    }
    replayed = wait_for(lambda: settled(rpc, request_id))
    assert (replayed["state"], replayed["correlation_id"]) == ("applied", f"corr-{unique}")  # replayed with its id
    assert rpc.status.list_dead_letters() == []
    assert rpc.status.replay_dead_letters() == {"replayed": [], "not_replayable": []}
    gone = rpc.status.replay_dead_letters([letter["message_id"]])  # replayed already: named, not silent
    assert gone == {"replayed": [], "not_replayable": [], "not_found": [letter["message_id"]]}
    assert [h["request_id"] for h in rpc.status.get_status_history(student["id"])["items"]] == [request_id]


def test_purge_dead_letters(config, rpc):
    dispatch = event_dispatcher(config)
    for n in range(3):
        dispatch("gateway", "status_change_requested", {"not": n})
    wait_for(lambda: len(rpc.status.list_dead_letters()) == 3)
    assert rpc.status.purge_dead_letters() == {"purged": 3}
    assert rpc.status.list_dead_letters() == []


def test_events_wait_for_a_subscriber_that_is_down(container_factory, config, rpc, unique, services):
    """The students service is stopped while status changes are applied; started
    again, it processes every student_status_changed it missed."""
    students_container = next(c for c in services.containers if c.service_name == "students")
    course = f"course-{unique}"
    created = [new_student(rpc, unique, n, course) for n in range(5)]
    for student in created:
        wait_for(lambda sid=student["id"]: tracked(rpc, sid))
    students_container.stop()

    requests = [rpc.status.request_status_change(s["id"], "active") for s in created]
    for request in requests:
        assert wait_for(lambda rid=request["request_id"]: settled(rpc, rid))["state"] == "applied"

    restarted = container_factory(StudentsService, config)
    with entrypoint_waiter(restarted, "handle_student_status_changed", timeout=15):
        restarted.start()
    wait_for(lambda: len(rpc.students.list_students(status="active", course=course)["items"]) == 5)


def test_rpc_has_typed_errors_for_dead_letter_arguments(rpc):
    from services.exceptions import ValidationFailed

    for call in (lambda: rpc.status.list_dead_letters(0), lambda: rpc.students.replay_dead_letters("all")):
        try:
            call()
        except ValidationFailed as exc:
            assert exc.details
        else:
            raise AssertionError("expected ValidationFailed")
