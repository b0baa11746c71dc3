"""status: the authority on the student status lifecycle.

RPC: request_status_change, get_status_request, get_status_history,
get_current_status, ping.
Handles: gateway.status_change_requested, students.student_created,
students.student_deleted.
Events: student_status_changed (via the outbox, after the change is committed).
"""

from __future__ import annotations

from nameko.rpc import rpc

from services import dead_letters
from services import status_repo as repo
from services.db import Database
from services.exceptions import ValidationFailed
from services.models import StatusBase
from services.processing import StatusApplier
from services.retry import reliable_event_handler
from services.schemas import (
    CurrentStatusSchema,
    HistoryEntrySchema,
    HistoryQuerySchema,
    StatusChangeSchema,
    StatusRequestSchema,
    load,
    positive_id,
)

request_schema = StatusRequestSchema()


# the mixin is named through its module (see services/students.py)
class StatusService(dead_letters.DeadLetterRpc):
    name = "status"

    db = Database(StatusBase, session_options={"expire_on_commit": False})
    applier = StatusApplier()

    @rpc
    def ping(self) -> dict:
        return {"service": self.name, "ok": True}

    @rpc
    def request_status_change(
        self, student_id, status, reason=None, actor=None, idempotency_key=None, course=None
    ) -> dict:
        command = load(
            StatusChangeSchema(),
            {
                "student_id": student_id,
                "status": status,
                "reason": reason,
                "actor": actor,
                "idempotency_key": idempotency_key,
                "course": course,
            },
        )
        request, created = repo.submit(self.db.Session, command)
        if created:
            self.applier.wake()
        return request_schema.dump(request)

    @rpc
    def get_status_request(self, request_id: str) -> dict:
        with self.db.get_session() as session:
            return request_schema.dump(repo.get_request(session, str(request_id)))

    @rpc
    def get_status_history(self, student_id: int, limit: int = 50, cursor: str | None = None) -> dict:
        query = load(HistoryQuerySchema(), {"limit": limit, "cursor": cursor})
        with self.db.get_session() as session:
            items, next_cursor = repo.history_page(session, positive_id(student_id), **query)
            return {"items": HistoryEntrySchema(many=True).dump(items), "next_cursor": next_cursor}

    @rpc
    def get_current_status(self, student_id: int) -> dict:
        with self.db.get_session() as session:
            return CurrentStatusSchema().dump(repo.current(session, positive_id(student_id)))

    @reliable_event_handler("gateway", "status_change_requested")
    def handle_status_change_requested(self, payload: dict) -> None:
        command = load(StatusChangeSchema(), payload)  # invalid: parked as a dead letter at once
        _, created = repo.submit(self.db.Session, command)
        if created:
            self.applier.wake()

    @reliable_event_handler("students", "student_created")
    def handle_student_created(self, payload: dict) -> None:
        student_id = _event_student_id(payload, "student")
        with self.db.get_session() as session:
            repo.ensure_student(session, student_id)
        self.applier.wake()

    @reliable_event_handler("students", "student_deleted")
    def handle_student_deleted(self, payload: dict) -> None:
        student_id = _event_student_id(payload, None)
        with self.db.get_session() as session:
            repo.mark_deleted(session, student_id)


def _event_student_id(payload: dict, key: str | None) -> int:
    try:
        return positive_id(payload[key]["id"] if key else payload["student_id"])
    except (KeyError, TypeError):
        raise ValidationFailed("Event without a student id.", {"student_id": ["Missing."]}) from None
