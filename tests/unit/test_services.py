"""Service methods and the status batch, on real SQLite databases (no broker).

Workers come from ``worker_factory``: the ``db`` dependency is a real
nameko-sqlalchemy wrapper on a per-test SQLite file; anything not passed is a
``MagicMock`` (the status service's ``applier``).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from nameko.testing.services import worker_factory
from sqlalchemy import func, select
from sqlalchemy.orm import sessionmaker

from services._status import batches
from services._status import repo as status_repo
from services._status.models import StatusBase, StatusHistory, StatusOutbox, StatusRequest, StudentStatus
from services._students.models import StudentsBase, StudentsOutbox
from services.exceptions import (
    EmailAlreadyExists,
    IdempotencyKeyReused,
    StudentNotFound,
    ValidationFailed,
    VersionMismatch,
)
from services.infra import retry
from services.infra.db import build_engine
from services.infra.outbox import OutboxWriter
from services.infra.settings import Settings
from services.status import StatusService
from services.students import StudentsService


def make_session_factory(tmp_path, name: str, base) -> sessionmaker:
    engine = build_engine(f"sqlite:///{tmp_path}/{name}.db")
    base.metadata.create_all(engine)
    return sessionmaker(bind=engine, expire_on_commit=False)


@pytest.fixture
def students_db(tmp_path):
    factory = make_session_factory(tmp_path, "students", StudentsBase)
    yield factory
    factory.kw["bind"].dispose()


@pytest.fixture
def status_db(tmp_path):
    factory = make_session_factory(tmp_path, "status", StatusBase)
    yield factory
    factory.kw["bind"].dispose()


@pytest.fixture
def students(students_db):
    yield worker_factory(StudentsService, db=students_db, outbox=OutboxWriter(StudentsOutbox))


@pytest.fixture
def status(status_db):
    yield worker_factory(StatusService, db=status_db, settings=Settings())


def outbox_rows(factory: sessionmaker, model=StudentsOutbox) -> list[tuple[str, dict]]:
    with factory() as session:
        return [(row.event_type, row.payload) for row in session.scalars(select(model).order_by(model.id))]


def count(factory: sessionmaker, model) -> int:
    with factory() as session:
        return session.scalar(select(func.count()).select_from(model))


def new_student(service, n: int, course: str = "Physics") -> dict:
    return service.create_student({"name": f"Student {n}", "email": f"s{n}@example.com", "course": course})


def status_event(student_id: int, to_status: str, version: int) -> dict:
    return {
        "student_id": student_id,
        "from_status": "enrolled",
        "to_status": to_status,
        "reason": None,
        "actor": "test",
        "request_id": "00000000-0000-4000-8000-000000000000",
        "version": version,
        "occurred_at": "2024-01-01T00:00:00+00:00",
    }


# --- students ----------------------------------------------------------------


class TestCreateStudent:
    def test_persists_and_writes_student_created(self, students, students_db):
        created = students.create_student({"name": " Ana ", "email": "Ana@Example.com", "course": "Physics"})

        assert created["id"] >= 1
        assert {k: created[k] for k in ("name", "email", "course", "status", "version")} == {
            "name": "Ana",
            "email": "ana@example.com",
            "course": "Physics",
            "status": "enrolled",
            "version": 1,
        }
        assert created["created_at"] and created["updated_at"]
        assert students.get_student(created["id"]) == created
        assert outbox_rows(students_db) == [("student_created", {"student": created})]

    @pytest.mark.parametrize("email", ["ana@example.com", "ANA@example.com", "  Ana@Example.COM "])
    def test_duplicate_email_is_case_insensitive(self, students, students_db, email):
        students.create_student({"name": "Ana", "email": "ana@example.com", "course": "Physics"})

        with pytest.raises(EmailAlreadyExists) as info:
            students.create_student({"name": "Other", "email": email, "course": "Maths"})

        assert info.value.details == {"email": "ana@example.com"}
        assert count(students_db, StudentsBase.metadata.tables["students"]) == 1
        assert [event for event, _ in outbox_rows(students_db)] == ["student_created"]

    def test_invalid_input_writes_nothing(self, students, students_db):
        with pytest.raises(ValidationFailed) as info:
            students.create_student({"name": "Ana", "email": "nope"})

        assert set(info.value.details) == {"email", "course"}
        assert outbox_rows(students_db) == []


class TestGetStudent:
    def test_unknown_is_not_found(self, students):
        with pytest.raises(StudentNotFound) as info:
            students.get_student(999)

        assert info.value.details == {"student_id": 999}

    @pytest.mark.parametrize("student_id", [0, -1, "1", True, None])
    def test_invalid_id(self, students, student_id):
        with pytest.raises(ValidationFailed):
            students.get_student(student_id)


class TestUpdateStudent:
    def test_success_increments_the_version_and_writes_student_updated(self, students, students_db):
        student = new_student(students, 1)

        updated = students.update_student(student["id"], {"name": "Renamed", "course": "Maths"}, expected_version=1)
        again = students.update_student(student["id"], {"email": "NEW@example.com"})

        assert (updated["name"], updated["course"], updated["version"]) == ("Renamed", "Maths", 2)
        assert (again["email"], again["version"]) == ("new@example.com", 3)
        assert students.get_student(student["id"]) == again
        assert outbox_rows(students_db)[1:] == [
            ("student_updated", {"student": updated, "changes": ["course", "name"]}),
            ("student_updated", {"student": again, "changes": ["email"]}),
        ]

    @pytest.mark.parametrize("expected_version", [0, 2, 7])
    def test_version_mismatch(self, students, students_db, expected_version):
        student = new_student(students, 1)

        with pytest.raises(VersionMismatch) as info:
            students.update_student(student["id"], {"name": "Lost update"}, expected_version=expected_version)

        assert info.value.details == {
            "student_id": student["id"],
            "expected_version": expected_version,
            "current_version": 1,
        }
        assert students.get_student(student["id"]) == student
        assert [event for event, _ in outbox_rows(students_db)] == ["student_created"]

    def test_email_of_another_student_is_taken(self, students):
        first, second = new_student(students, 1), new_student(students, 2)

        with pytest.raises(EmailAlreadyExists):
            students.update_student(second["id"], {"email": first["email"].upper()})

    def test_own_email_is_not_a_conflict(self, students):
        student = new_student(students, 1)

        assert students.update_student(student["id"], {"email": student["email"]})["version"] == 2

    def test_unknown_student(self, students):
        with pytest.raises(StudentNotFound):
            students.update_student(999, {"name": "x"})

    @pytest.mark.parametrize("expected_version", ["1", 1.0, True])
    def test_invalid_expected_version(self, students, expected_version):
        student = new_student(students, 1)

        with pytest.raises(ValidationFailed) as info:
            students.update_student(student["id"], {"name": "x"}, expected_version=expected_version)
        assert set(info.value.details) == {"expected_version"}


class TestListStudents:
    def test_keyset_pages_see_rows_inserted_between_pages(self, students):
        ids = [new_student(students, n)["id"] for n in range(5)]

        first = students.list_students(limit=2)
        second = students.list_students(limit=2, cursor=first["next_cursor"])
        inserted = new_student(students, 99)["id"]
        third = students.list_students(limit=2, cursor=second["next_cursor"])

        assert [s["id"] for s in first["items"]] == ids[0:2]
        assert [s["id"] for s in second["items"]] == ids[2:4]
        assert [s["id"] for s in third["items"]] == [ids[4], inserted]
        assert first["next_cursor"] and second["next_cursor"]
        assert third["next_cursor"] is None

    def test_last_full_page_has_no_cursor(self, students):
        for n in range(4):
            new_student(students, n)

        assert students.list_students(limit=4)["next_cursor"] is None
        assert students.list_students(limit=3)["next_cursor"] is not None

    def test_filters_by_course_and_status(self, students):
        physics = [new_student(students, n, "Physics")["id"] for n in range(3)]
        maths = [new_student(students, n, "Maths")["id"] for n in range(3, 5)]
        students.handle_student_status_changed(status_event(physics[1], "active", 1))
        students.handle_student_status_changed(status_event(maths[0], "active", 1))

        def listed(**filters) -> list[int]:
            return [s["id"] for s in students.list_students(**filters)["items"]]

        assert listed(course="Maths") == maths
        assert listed(status="active") == [physics[1], maths[0]]
        assert listed(status="active", course="Physics") == [physics[1]]
        assert listed(status="enrolled", course="Physics", limit=1) == [physics[0]]
        assert listed(course="History") == []

    @pytest.mark.parametrize(
        ("query", "field"),
        [({"limit": 0}, "limit"), ({"limit": 501}, "limit"), ({"status": "graduated"}, "status")],
    )
    def test_invalid_query(self, students, query, field):
        with pytest.raises(ValidationFailed) as info:
            students.list_students(**query)
        assert set(info.value.details) == {field}

    @pytest.mark.parametrize(
        "cursor",
        [
            "garbage!",
            base64.urlsafe_b64encode(b"after:x").decode(),
            # decodes to an integer no database column can hold
            base64.urlsafe_b64encode(b"after:" + b"9" * 30).decode(),
        ],
        ids=["garbage", "not-a-number", "out-of-range"],
    )
    def test_invalid_cursor(self, students, cursor):
        new_student(students, 1)

        with pytest.raises(ValidationFailed) as info:
            students.list_students(cursor=cursor)
        assert info.value.details == {"cursor": ["Invalid cursor."]}


class TestDeleteStudent:
    def test_delete_writes_student_deleted(self, students, students_db):
        student = new_student(students, 1)

        deleted = students.delete_student(student["id"])

        assert deleted == student
        with pytest.raises(StudentNotFound):
            students.get_student(student["id"])
        assert outbox_rows(students_db)[-1] == ("student_deleted", {"student_id": student["id"], "student": student})

    def test_unknown_student(self, students, students_db):
        with pytest.raises(StudentNotFound):
            students.delete_student(999)
        assert outbox_rows(students_db) == []


class TestStatusChangedReadCopy:
    def test_only_newer_versions_apply(self, students):
        student_id = new_student(students, 1)["id"]
        steps = [
            (2, "active", "active"),  # newer: applied
            (1, "withdrawn", "active"),  # older: ignored
            (2, "suspended", "active"),  # same version (a redelivery): ignored
            (3, "completed", "completed"),  # newer: applied
        ]
        for version, to_status, expected in steps:
            students.handle_student_status_changed(status_event(student_id, to_status, version))
            assert students.get_student(student_id)["status"] == expected, (version, to_status)

    def test_a_batch_leaves_each_student_at_its_latest_change_in_any_order(self, students):
        first, second = new_student(students, 1)["id"], new_student(students, 2)["id"]
        students.handle_student_status_changed(status_event(second, "active", 5))
        changes = [
            status_event(first, "active", 2),
            status_event(second, "suspended", 4),  # older than the copy: ignored
            status_event(first, "completed", 4),
            status_event(first, "suspended", 3),  # after a later one in the batch: ignored
        ]
        students.handle_student_status_changed({"changes": changes})
        assert students.get_student(first)["status"] == "completed"
        assert students.get_student(second)["status"] == "active"

    def test_profile_version_is_not_touched(self, students):
        student = new_student(students, 1)

        students.handle_student_status_changed(status_event(student["id"], "active", 1))

        assert students.get_student(student["id"])["version"] == student["version"]

    @pytest.mark.parametrize(
        "payload",
        [
            {},
            {"student_id": "abc", "to_status": "active", "version": 1},
            {"to_status": "active", "version": 1},
            {"student_id": 1, "to_status": "graduated", "version": 5},
        ],
        ids=["empty", "bad-id", "no-id", "unknown-status"],
    )
    def test_invalid_event_fails_validation_and_changes_nothing(self, students, payload):
        """Raising a validation error makes the reliable handler park the event at once."""
        student = new_student(students, 1)

        with pytest.raises(retry.PERMANENT_ERRORS):
            students.handle_student_status_changed(payload)

        assert students.get_student(student["id"]) == student


# --- status: requests --------------------------------------------------------


class TestRequestStatusChange:
    def test_records_a_pending_request_and_wakes_the_applier(self, status, status_db):
        request = status.request_status_change(5, "active", reason="started", actor="tester", idempotency_key="k1")

        assert request["request_id"]
        assert {k: request[k] for k in ("student_id", "status", "reason", "actor", "idempotency_key", "state")} == {
            "student_id": 5,
            "status": "active",
            "reason": "started",
            "actor": "tester",
            "idempotency_key": "k1",
            "state": "pending",
        }
        assert request["error"] is None
        status.applier.recorded.assert_called_once_with()
        with status_db() as session:
            row = session.scalar(select(StatusRequest))
        assert (row.id, row.state, row.target_status) == (request["request_id"], "pending", "active")

    def test_same_idempotency_key_returns_the_same_request(self, status, status_db):
        first = status.request_status_change(5, "active", idempotency_key="k1")
        again = status.request_status_change(5, "active", idempotency_key="k1")

        assert again == first
        assert count(status_db, StatusRequest) == 1
        status.applier.recorded.assert_called_once_with()

    def test_idempotency_key_is_scoped_per_student(self, status, status_db):
        first = status.request_status_change(5, "active", idempotency_key="k1")
        other = status.request_status_change(6, "active", idempotency_key="k1")

        assert other["request_id"] != first["request_id"]
        assert count(status_db, StatusRequest) == 2

    def test_without_a_key_every_request_is_new(self, status, status_db):
        first = status.request_status_change(5, "active")
        second = status.request_status_change(5, "active")

        assert first["request_id"] != second["request_id"]
        assert count(status_db, StatusRequest) == 2
        assert status.applier.recorded.call_count == 2

    def test_reused_key_with_another_status_is_refused(self, status, status_db):
        first = status.request_status_change(5, "active", idempotency_key="k1")

        with pytest.raises(IdempotencyKeyReused) as info:
            status.request_status_change(5, "withdrawn", idempotency_key="k1")

        assert info.value.details == {"idempotency_key": "k1", "request_id": first["request_id"]}
        assert count(status_db, StatusRequest) == 1

    @pytest.mark.parametrize(
        ("student_id", "target", "field"),
        [(5, "graduated", "status"), (5, None, "status"), (0, "active", "student_id"), ("5", "active", "student_id")],
    )
    def test_invalid_request(self, status, status_db, student_id, target, field):
        with pytest.raises(ValidationFailed) as info:
            status.request_status_change(student_id, target)

        assert set(info.value.details) == {field}
        assert count(status_db, StatusRequest) == 0
        status.applier.recorded.assert_not_called()


# --- status: applying a batch -----------------------------------------------

NOW = datetime(2024, 5, 17, 12, 0, tzinfo=UTC)


def submit(
    factory: sessionmaker, student_id: int, target: str, reason: str | None = None, correlation_id: str | None = None
) -> str:
    command = {"student_id": student_id, "status": target, "reason": reason, "actor": "tester"}
    command["correlation_id"] = correlation_id
    request, created = status_repo.submit(factory, command)
    assert created
    return request.id


def track(factory: sessionmaker, *student_ids: int) -> None:
    with factory.begin() as session:
        for student_id in student_ids:
            assert status_repo.ensure_student(session, student_id)


def apply(factory: sessionmaker, limit: int = 100) -> batches.BatchResult:
    with factory.begin() as session:
        return batches.apply_pending(session, limit, now=NOW)


def requests_by_id(factory: sessionmaker) -> dict[str, StatusRequest]:
    with factory() as session:
        return {r.id: r for r in session.scalars(select(StatusRequest))}


class TestApplyPending:
    def test_requests_recorded_together_apply_in_the_order_given_with_or_without_a_key(self, status_db):
        track(status_db, 1)
        targets = ["active", "suspended", "active", "suspended"]
        commands = [
            {"request_id": f"r-{n}", "student_id": 1, "status": target, "idempotency_key": "k-1" if n == 1 else None}
            for n, target in enumerate(targets)
        ]

        status_repo.submit_many(status_db, commands)  # the keyed one is recorded alone, in its place
        apply(status_db)

        with status_db() as session:
            rows = session.execute(select(StatusRequest.id, StatusRequest.state).order_by(StatusRequest.seq)).all()
        assert [tuple(row) for row in rows] == [(f"r-{n}", "applied") for n in range(4)]

    def test_batch_applies_allowed_changes_in_order_and_rejects_the_rest(self, status_db):
        track(status_db, 1)
        to_active = submit(status_db, 1, "active", "started", "corr-1")
        to_completed = submit(status_db, 1, "completed", "finished", "corr-2")
        back_to_active = submit(status_db, 1, "active", "again", "corr-3")

        result = apply(status_db)

        assert (result.applied, result.noops, result.rejected, result.events) == (2, 0, 1, 2)
        requests = requests_by_id(status_db)
        assert [(requests[i].state, requests[i].from_status) for i in (to_active, to_completed)] == [
            ("applied", "enrolled"),
            ("applied", "active"),
        ]
        rejected = requests[back_to_active]
        assert (rejected.state, rejected.error_code, rejected.from_status) == (
            "rejected",
            "INVALID_TRANSITION",
            "completed",
        )
        assert "final" in rejected.error_message
        with status_db() as session:
            current = session.get(StudentStatus, 1)
            history = list(session.scalars(select(StatusHistory).order_by(StatusHistory.id)))
        assert (current.status, current.version) == ("completed", 2)
        assert [(h.from_status, h.to_status, h.version, h.request_id) for h in history] == [
            ("enrolled", "active", 1, to_active),
            ("active", "completed", 2, to_completed),
        ]
        # one outbox row (one message) carries the batch's changes in order
        assert outbox_rows(status_db, StatusOutbox) == [
            (
                "student_status_changed",
                {
                    "changes": [
                        {
                            "student_id": 1,
                            "from_status": "enrolled",
                            "to_status": "active",
                            "reason": "started",
                            "actor": "tester",
                            "request_id": to_active,
                            "course": None,
                            "version": 1,
                            "occurred_at": NOW.isoformat(),
                            "correlation_id": "corr-1",
                        },
                        {
                            "student_id": 1,
                            "from_status": "active",
                            "to_status": "completed",
                            "reason": "finished",
                            "actor": "tester",
                            "request_id": to_completed,
                            "course": None,
                            "version": 2,
                            "occurred_at": NOW.isoformat(),
                            "correlation_id": "corr-2",
                        },
                    ]
                },
            )
        ]
        # published with the first change's id as its header (each change keeps its own)
        with status_db() as session:
            assert session.scalars(select(StatusOutbox.correlation_id)).all() == ["corr-1"]
        assert [(request.id, outcome["state"]) for request, outcome in result.outcomes] == [
            (to_active, "applied"),
            (to_completed, "applied"),
            (back_to_active, "rejected"),
        ]

    def test_applied_requests_are_not_applied_again(self, status_db):
        track(status_db, 1)
        submit(status_db, 1, "active")
        apply(status_db)

        result = apply(status_db)

        assert result.handled == 0
        assert count(status_db, StatusHistory) == 1

    def test_same_status_is_a_noop_without_history(self, status_db):
        track(status_db, 1)
        request_id = submit(status_db, 1, "enrolled")

        result = apply(status_db)

        assert (result.applied, result.noops, result.rejected, result.events) == (0, 1, 0, 0)
        request = requests_by_id(status_db)[request_id]
        assert (request.state, request.error_code) == ("applied", None)
        with status_db() as session:
            assert session.get(StudentStatus, 1).version == 0
        assert count(status_db, StatusHistory) == 0
        assert outbox_rows(status_db, StatusOutbox) == []

    @pytest.mark.parametrize("tracked_first", [True, False], ids=["tracked", "deleted-before-created"])
    def test_deleted_student_is_rejected(self, status_db, tracked_first):
        if tracked_first:
            track(status_db, 1)
        with status_db.begin() as session:
            status_repo.mark_deleted(session, 1)
        request_id = submit(status_db, 1, "active")

        result = apply(status_db)

        assert result.rejected == 1
        request = requests_by_id(status_db)[request_id]
        assert (request.state, request.error_code) == ("rejected", "STUDENT_NOT_FOUND")
        assert count(status_db, StatusHistory) == 0

    def test_untracked_students_stay_pending(self, status_db):
        track(status_db, 1)
        known = submit(status_db, 1, "active")
        unknown = [submit(status_db, 2, "active"), submit(status_db, 3, "withdrawn"), submit(status_db, 3, "active")]

        result = apply(status_db)

        assert (result.applied, result.handled) == (1, 1)
        requests = requests_by_id(status_db)
        assert requests[known].state == "applied"
        assert [requests[i].state for i in unknown] == ["pending"] * 3
        with status_db() as session:
            assert batches.due_unknown_students(session, 10) == {2, 3}
            assert len(batches.due_unknown_students(session, 1)) == 1

    def test_tracked_student_is_no_longer_unknown(self, status_db):
        submit(status_db, 2, "active")
        track(status_db, 2)

        assert apply(status_db).applied == 1
        with status_db() as session:
            assert batches.due_unknown_students(session, 10) == set()

    def test_ensure_student_is_idempotent(self, status_db):
        track(status_db, 1)

        with status_db() as session:
            assert status_repo.ensure_student(session, 1) is False
        assert count(status_db, StudentStatus) == 1


def test_status_event_payload_feeds_the_students_read_copy(status_db, students):
    """The status service's outbox payload is what the students handler accepts."""
    student_id = new_student(students, 1)["id"]
    track(status_db, student_id)
    submit(status_db, student_id, "active")
    submit(status_db, student_id, "suspended")
    apply(status_db)

    for event_type, payload in outbox_rows(status_db, StatusOutbox):
        assert event_type == "student_status_changed"
        students.handle_student_status_changed(payload)

    assert students.get_student(student_id)["status"] == "suspended"
