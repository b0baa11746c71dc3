"""students: owns student profiles; keeps a read copy of each current status.

RPC: create_student, get_student, get_student_by_email, get_students,
resolve_student_emails, list_students, update_student, delete_student, ping,
and the dead-letter methods.
Events: student_created, student_updated, student_deleted (via the outbox).
Handles: status.student_status_changed (read copy).
"""

from __future__ import annotations

from services._students import repo
from services._students.models import StudentsBase, StudentsOutbox
from services.exceptions import ValidationFailed
from services.infra import dead_letters, tracing
from services.infra.correlation import Correlation
from services.infra.db import Database
from services.infra.heap import LeanHeap
from services.infra.inbound import rpc
from services.infra.logs import LogContext
from services.infra.metrics import Metrics
from services.infra.outbox import Outbox
from services.infra.retry import reliable_event_handler
from services.infra.tracing import Tracing
from services.schemas import (
    ListStudentsSchema,
    StudentCreateSchema,
    StudentIdsSchema,
    StudentSchema,
    StudentUpdateSchema,
    load,
    positive_id,
    status_changes,
)

student_schema = StudentSchema()


# the mixin is named through its module: `nameko run services.students` would take
# a mixin imported by name for one more service
class StudentsService(dead_letters.DeadLetterRpc):
    name = "students"

    correlation = Correlation()  # every worker runs under its request's correlation id
    tracing = Tracing()  # each worker a span (OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set)
    log_context = LogContext()  # its log lines name the service, the ids in hand, each worker's duration
    metrics = Metrics()  # /metrics on METRICS_PORT_<SERVICE>; times every RPC method and event handler
    heap = LeanHeap()  # less for the garbage collector: start-up heap frozen, no cycle per worker
    db = Database(StudentsBase, session_options={"expire_on_commit": False})
    outbox = Outbox(StudentsOutbox)

    @rpc
    def ping(self) -> dict:
        return {"service": self.name, "ok": True}

    @rpc
    def create_student(self, data: dict) -> dict:
        fields = load(StudentCreateSchema(), data)
        with self.db.begin() as session:
            student = student_schema.dump(repo.create(session, fields))
            self.outbox.add(session, "student_created", {"student": student})
        return student

    @rpc
    def get_student(self, student_id: int) -> dict:
        with self.db() as session:
            return student_schema.dump(repo.get(session, positive_id(student_id)))

    @rpc
    def get_student_by_email(self, email: str) -> dict:
        with self.db() as session:
            return student_schema.dump(repo.get_by_email(session, email))

    @rpc
    def get_students(self, student_ids: list[int]) -> list[dict]:
        """The students among ``student_ids`` that exist (up to 10,000 ids)."""
        ids = load(StudentIdsSchema(), {"student_ids": student_ids})["student_ids"]
        with self.db() as session:
            return student_schema.dump(repo.get_many(session, ids), many=True)

    @rpc
    def resolve_student_emails(self, emails: list[str]) -> dict[str, int]:
        """``{email: student_id}`` for the e-mails (up to 10,000) that belong to a student."""
        emails = load(StudentIdsSchema(), {"emails": emails})["emails"]
        with self.db() as session:
            return repo.ids_by_email(session, emails)

    @rpc
    def list_students(self, status=None, course=None, limit=50, cursor=None, name=None) -> dict:
        query = load(
            ListStudentsSchema(), {"status": status, "course": course, "limit": limit, "cursor": cursor, "name": name}
        )
        with self.db() as session:
            items, next_cursor = repo.list_page(session, **query)
            return {"items": student_schema.dump(items, many=True), "next_cursor": next_cursor}

    @rpc
    def update_student(self, student_id: int, changes: dict, expected_version: int | None = None) -> dict:
        fields = load(StudentUpdateSchema(), changes)
        with self.db.begin() as session:
            student = repo.update_fields(session, positive_id(student_id), fields, _version(expected_version))
            student = student_schema.dump(student)
            self.outbox.add(session, "student_updated", {"student": student, "changes": sorted(fields)})
        return student

    @rpc
    def delete_student(self, student_id: int) -> dict:
        with self.db.begin() as session:
            student = student_schema.dump(repo.delete(session, positive_id(student_id)))
            self.outbox.add(session, "student_deleted", {"student_id": student["id"], "student": student})
        return student

    @reliable_event_handler("status", "student_status_changed")
    def handle_student_status_changed(self, payload: dict) -> None:
        changes = status_changes(payload)  # invalid: parked as a dead letter at once
        with tracing.adopted(changes, "handle status.student_status_changed"), self.db.begin() as session:
            repo.apply_status_changes(session, changes)


def _version(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationFailed("Invalid version.", {"expected_version": ["Must be an integer."]})
    return value
