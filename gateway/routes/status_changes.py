"""Routes of status changes: asked for (one, or a course completion), polled,
and the applied history. A change is answered once durably queued (202)."""

from __future__ import annotations

import hashlib
from typing import Any

from werkzeug.wrappers import Request, Response

from gateway import request_ids
from gateway.entrypoints import http, json_response
from gateway.exceptions import BACKEND_ERRORS
from gateway.http import BODY_ERRORS, Actor, actor, idempotency_key, read_json, read_query
from gateway.routes.students import STUDENT
from services import lifecycle
from services.exceptions import (
    EmailAlreadyExists,
    IdempotencyKeyReused,
    StatusRequestNotFound,
    StudentNotFound,
    ValidationFailed,
)
from services.schemas import (
    CompletionBodySchema,
    HistoryQuerySchema,
    StatusChangeBodySchema,
    StudentCreateSchema,
    load,
    quick_status_change_body,
)

SUBMIT_ERRORS = (*BODY_ERRORS, IdempotencyKeyReused, *BACKEND_ERRORS)
# made once: a schema's construction costs more than its load
STATUS_CHANGE_BODY, COMPLETION_BODY = StatusChangeBodySchema(), CompletionBodySchema()
STUDENT_CREATE, HISTORY_QUERY = StudentCreateSchema(), HistoryQuerySchema()


class StatusChangeRoutes:
    """Uses ``GatewayService``'s ``students``, ``student_reads``, ``status``, ``dispatch``,
    ``known_students``, ``settings`` and ``correlation`` (the request's id)."""

    @http("POST", STUDENT + "/status", scope="status:write", errors=(*SUBMIT_ERRORS, StudentNotFound))
    def request_status_change(self, request: Request, student_id: int) -> Response:
        """Ask for a status change; applied asynchronously.
        Answered once the request is durably queued. Repeating a request with
        the same ``Idempotency-Key`` returns the same request.
        ---
        post:
          tags: [status]
          parameters: [StudentId, IdempotencyKey, Actor]
          requestBody:
            required: true
            content:
              application/json:
                schema: StatusChangeBodySchema
          responses:
            202:
              description: Accepted; poll ``Location``.
              headers:
                Location: {schema: {type: string}}
              content:
                application/json:
                  schema: StatusRequestSchema
        """
        key, who = idempotency_key(request), actor(request)
        data = read_json(request, self.settings.max_body_bytes)
        body = quick_status_change_body(data) or load(STATUS_CHANGE_BODY, data)
        if student_id not in self.known_students:  # 404 now rather than a rejection later
            self.student_reads.read(student_id, self.students.get_student)
            self.known_students.add(student_id)
        return _accepted(self._submit(student_id, body["status"], body["reason"], key, who))

    @http("POST", STUDENT + "/completion", scope="status:write", errors=(*SUBMIT_ERRORS, StudentNotFound))
    def complete_course(self, request: Request, student_id: int) -> Response:
        """Complete the course: the status becomes ``completed`` through the lifecycle
        (rejected unless the student is ``active``), then a certificate is issued and
        the student is notified. Answered once the request is durably queued.
        ---
        post:
          tags: [completion]
          parameters: [StudentId, IdempotencyKey, Actor]
          requestBody:
            required: false
            content:
              application/json:
                schema: CompletionBodySchema
          responses:
            202:
              description: Accepted; poll ``Location``.
              headers:
                Location: {schema: {type: string}}
              content:
                application/json:
                  schema: StatusRequestSchema
        """
        key, who = idempotency_key(request), actor(request)
        body = load(COMPLETION_BODY, read_json(request, self.settings.max_body_bytes, required=False))
        student = self.students.get_student(student_id)
        course = body["course"] or student["course"]
        return _accepted(self._submit(student_id, lifecycle.COMPLETED, "course completed", key, who, course))

    @http("POST", "/api/v1/certificate/", scope="status:write", errors=SUBMIT_ERRORS)
    def legacy_certificate(self, request: Request) -> Response:
        """The original system's endpoint: finds the student by e-mail or creates it (with the
        ``language`` given, if any), then runs the completion flow (activating an ``enrolled``
        student first).
        Answers 202 with the completion request to poll, not a premature 201.
        ---
        post:
          tags: [completion]
          parameters: [IdempotencyKey, Actor]
          requestBody:
            required: true
            content:
              application/json:
                schema: StudentCreateSchema
          responses:
            202:
              description: Accepted; poll ``Location``; ``student`` is the student found or created.
              headers:
                Location: {schema: {type: string}}
              content:
                application/json:
                  schema: CertificateRequestSchema
        """
        key, who = idempotency_key(request), actor(request)
        fields = load(STUDENT_CREATE, read_json(request, self.settings.max_body_bytes))
        try:
            student = self.students.create_student(fields)
        except EmailAlreadyExists:
            student = self.students.get_student_by_email(fields["email"])
        before = ()
        if student["status"] == lifecycle.ENROLLED:
            # queued in the completion's message, before it: recorded in that order, so applied before it
            before = (
                self._request(
                    student["id"], lifecycle.ACTIVE, "course started", _derived_key(key, lifecycle.ACTIVE), who
                ),
            )
        accepted = self._submit(
            student["id"], lifecycle.COMPLETED, "course completed", key, who, fields["course"], before=before
        )
        return _accepted({**accepted, "student": student})

    def _submit(
        self,
        student_id: int,
        status: str,
        reason: str | None,
        key: str | None,
        who: Actor,
        course: str | None = None,
        before: tuple[dict, ...] = (),
    ) -> dict:
        """Queue a status change durably; a repeated idempotency key returns the original.
        ``before``: requests (:meth:`_request`) queued in the same message, ahead of it."""
        request = self._request(student_id, status, reason, key, who, course)
        request_id = request["request_id"]
        if key is not None:
            existing = self._repeat_of(request_id, student_id, status, key)
            if existing is not None:
                return existing
        self.dispatch("status_change_requested", *before, request)
        return {
            "request_id": request_id,
            "student_id": student_id,
            "status": status,
            "state": "pending",
            "correlation_id": self.correlation,
        }

    def _request(
        self, student_id: int, status: str, reason: str | None, key: str | None, who: Actor, course: str | None = None
    ) -> dict:
        """A ``status_change_requested`` payload, its id issued here (the same for the same key)."""
        return {
            "request_id": request_ids.issue(self.settings.request_id_secret, student_id, key),
            "student_id": student_id,
            "status": status,
            "reason": reason,
            "actor": who.name,
            "on_behalf_of": who.on_behalf_of,
            "idempotency_key": key,
            "course": course,
            # its own: requests accepted together share one message, and its header
            "correlation_id": self.correlation,
        }

    def _repeat_of(self, request_id: str, student_id: int, status: str, key: str) -> dict | None:
        try:
            existing = self.status.get_status_request(request_id)
        except StatusRequestNotFound:
            return None  # first time, or still queued: dispatching again is harmless
        if existing["student_id"] != student_id or existing["status"] != status:
            raise IdempotencyKeyReused(
                "This idempotency key was already used for a different request.",
                {"idempotency_key": key, "request_id": request_id},
            )
        return existing

    @http(
        "GET",
        "/status-requests/<uuid:request_id>",
        scope="status:read",
        errors=(StatusRequestNotFound, *BACKEND_ERRORS),
    )
    def get_status_request(self, request: Request, request_id: str) -> Response:
        """A status change request: ``pending``, ``applied``, ``rejected`` or ``failed``.
        ---
        get:
          tags: [status]
          parameters: [{in: path, name: request_id, required: true, schema: {type: string, format: uuid}}]
          responses:
            200:
              description: The request; ``error`` says why it was rejected.
              content:
                application/json:
                  schema: StatusRequestSchema
        """
        try:
            return json_response(200, self.status.get_status_request(request_id))
        except StatusRequestNotFound:
            if not request_ids.is_issued(self.settings.request_id_secret, request_id):
                raise
            # issued by a gateway and durably queued, not yet recorded
            return json_response(200, {"request_id": request_id, "state": "pending", "queued": True})

    @http("GET", STUDENT + "/history", scope="status:read", errors=(StudentNotFound, ValidationFailed, *BACKEND_ERRORS))
    def get_history(self, request: Request, student_id: int) -> Response:
        """Applied status changes of a student, oldest first, by keyset pages.
        ---
        get:
          tags: [status]
          parameters:
          - StudentId
          - in: query
            schema: HistoryQuerySchema
          responses:
            200:
              description: One page of history.
              content:
                application/json:
                  schema: HistoryPageSchema
        """
        query = read_query(request, HISTORY_QUERY)
        self.students.get_student(student_id)
        return json_response(200, self.status.get_status_history(student_id, **query))


def _derived_key(key: str | None, step: str) -> str | None:
    """The idempotency key of a step a request takes on its way (the legacy endpoint's
    activation): as unique as the client's key, and within the same length limit."""
    if key is None:
        return None
    return f"{step}:{hashlib.sha256(key.encode()).hexdigest()}"


def _accepted(request: dict[str, Any]) -> Response:
    return json_response(202, request, {"Location": f"/status-requests/{request['request_id']}"})
