"""status: the authority on the student status lifecycle.

RPC: request_status_change, get_status_request, get_status_history,
get_current_status, ping.
Handles: gateway.status_change_requested, students.student_created,
students.student_deleted.
Events: student_status_changed (via the outbox, after the change is committed).
"""

from __future__ import annotations

import logging

from marshmallow import ValidationError
from nameko.events import event_handler
from nameko.rpc import rpc

from services import status_repo as repo
from services.db import Database
from services.exceptions import ServiceError, ValidationFailed
from services.models import StatusBase
from services.processing import StatusApplier
from services.schemas import (
    CurrentStatusSchema,
    HistoryEntrySchema,
    HistoryQuerySchema,
    StatusChangeSchema,
    StatusRequestSchema,
    load,
    positive_id,
)

log = logging.getLogger(__name__)

request_schema = StatusRequestSchema()


class StatusService:
    name = "status"

    db = Database(StatusBase, session_options={"expire_on_commit": False})
    applier = StatusApplier()

    @rpc
    def ping(self) -> dict:
        return {"service": self.name, "ok": True}

    @rpc
    def request_status_change(self, student_id, status, reason=None, actor=None, idempotency_key=None) -> dict:
        command = load(
            StatusChangeSchema(),
            {
                "student_id": student_id,
                "status": status,
                "reason": reason,
                "actor": actor,
                "idempotency_key": idempotency_key,
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

    @event_handler("gateway", "status_change_requested", requeue_on_error=True)
    def handle_status_change_requested(self, payload: dict) -> None:
        try:
            command = load(StatusChangeSchema(), payload)
        except ValidationFailed as exc:  # the gateway validates; this is a foreign publisher
            log.error("dropping invalid status_change_requested %r: %s", payload, exc.details)
            return
        try:
            _, created = repo.submit(self.db.Session, command)
        except ServiceError as exc:  # not retryable: retrying would only loop
            log.error("dropping status_change_requested %s: %s %s", payload.get("request_id"), exc.code, exc)
            return
        if created:
            self.applier.wake()

    @event_handler("students", "student_created", requeue_on_error=True)
    def handle_student_created(self, payload: dict) -> None:
        student_id = _event_student_id(payload, "student")
        if student_id is not None:
            with self.db.get_session() as session:
                repo.ensure_student(session, student_id)
            self.applier.wake()

    @event_handler("students", "student_deleted", requeue_on_error=True)
    def handle_student_deleted(self, payload: dict) -> None:
        student_id = _event_student_id(payload, None)
        if student_id is not None:
            with self.db.get_session() as session:
                repo.mark_deleted(session, student_id)


def _event_student_id(payload: dict, key: str | None) -> int | None:
    try:
        value = payload[key]["id"] if key else payload["student_id"]
        return positive_id(value)
    except (KeyError, TypeError, ValidationFailed, ValidationError):
        log.error("dropping event without a valid student id: %r", payload)
        return None
