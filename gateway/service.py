"""gateway: JSON over HTTP, translated into RPC calls (reads, creates) and
durably dispatched events (status changes, answered 202 Accepted).

Each handler's docstring carries its OpenAPI operation (see gateway.openapi).
"""

from __future__ import annotations

import base64
import contextlib
from itertools import islice
from typing import Any

from werkzeug.wrappers import Request, Response

from gateway import bulk, request_ids
from gateway.dependencies import BatchingEventDispatcher, GatewaySettings, KnownStudents, Settings, TimedRpcProxy
from gateway.entrypoints import http, json_response
from gateway.exceptions import PayloadTooLarge, ServiceUnavailable, UnsupportedMediaType
from gateway.http import idempotency_key, if_match_version, read_json, read_query
from gateway.openapi import build_spec
from services import jobs, lifecycle
from services.exceptions import EmailAlreadyExists, IdempotencyKeyReused, ServiceError, StatusRequestNotFound
from services.schemas import (
    CompletionBodySchema,
    HistoryQuerySchema,
    ListStudentsSchema,
    StatusChangeBodySchema,
    StudentCreateSchema,
    load,
)

STUDENT = "/students/<id:student_id>"
CHUNK_ROWS = 2_000  # rows per add_job_rows call while an upload streams in


class GatewayService:
    name = "gateway"

    students = TimedRpcProxy("students")
    status = TimedRpcProxy("status")
    certificates = TimedRpcProxy("certificates")
    # concurrent status changes share one confirmed message: {"requests": [...]}
    dispatch = BatchingEventDispatcher(batch_key="requests")
    known_students = KnownStudents()
    settings: GatewaySettings = Settings()

    # --- operations ----------------------------------------------------------

    @http("GET", "/health")
    def health(self, request: Request) -> Response:
        """Liveness: the gateway process answers.
        ---
        get:
          tags: [operations]
          responses:
            200: {description: The process is alive.}
        """
        return json_response(200, {"status": "ok"})

    @http("GET", "/ready")
    def ready(self, request: Request) -> Response:
        """Readiness: the broker is reachable and students and status answer.
        ---
        get:
          tags: [operations]
          responses:
            200: {description: Ready to serve.}
            503: ServiceUnavailable
        """
        checks: dict[str, str] = {}
        for name, proxy in (("students", self.students), ("status", self.status)):
            try:
                proxy.call("ping", self.settings.ready_timeout)
                checks[name] = "ok"
            except ServiceError as exc:
                checks[name] = exc.code
        if any(result != "ok" for result in checks.values()):
            raise ServiceUnavailable("Not ready.", {"checks": checks})
        return json_response(200, {"status": "ready", "checks": checks})

    @http("GET", "/openapi.json")
    def openapi(self, request: Request) -> Response:
        """This document.
        ---
        get:
          tags: [operations]
          responses:
            200: {description: The OpenAPI 3 document of this gateway.}
        """
        return json_response(200, build_spec())

    # --- students ------------------------------------------------------------

    @http("POST", "/students")
    def create_student(self, request: Request) -> Response:
        """Create a student (starts ``enrolled``).
        ---
        post:
          tags: [students]
          requestBody:
            required: true
            content:
              application/json:
                schema: StudentCreateSchema
          responses:
            201:
              description: Created; ``Location`` names the new student.
              headers:
                Location: {schema: {type: string}}
              content:
                application/json:
                  schema: StudentSchema
            400: MalformedJson
            409: Conflict
            413: PayloadTooLarge
            415: UnsupportedMediaType
            422: ValidationError
        """
        student = self.students.create_student(read_json(request, self.settings.max_body_bytes))
        return _student_response(201, student, {"Location": f"/students/{student['id']}"})

    @http("GET", "/students")
    def list_students(self, request: Request) -> Response:
        """List students, oldest first, by keyset pages.
        ---
        get:
          tags: [students]
          parameters:
          - in: query
            schema: ListStudentsSchema
          responses:
            200:
              description: One page; pass ``next_cursor`` as ``cursor`` for the next.
              content:
                application/json:
                  schema: StudentPageSchema
            422: ValidationError
        """
        return json_response(200, self.students.list_students(**read_query(request, ListStudentsSchema())))

    @http("GET", STUDENT)
    def get_student(self, request: Request, student_id: int) -> Response:
        """One student; ``ETag`` carries its version.
        ---
        get:
          tags: [students]
          parameters: [StudentId]
          responses:
            200:
              description: The student.
              content:
                application/json:
                  schema: StudentSchema
            404: NotFound
        """
        return _student_response(200, self.students.get_student(student_id))

    @http("PATCH", STUDENT)
    def update_student(self, request: Request, student_id: int) -> Response:
        """Change name, e-mail or course; ``If-Match: <version>`` guards against lost updates.
        ---
        patch:
          tags: [students]
          parameters:
          - StudentId
          - {in: header, name: If-Match, schema: {type: string}, description: The version last read.}
          requestBody:
            required: true
            content:
              application/json:
                schema: StudentUpdateSchema
          responses:
            200:
              description: The updated student.
              content:
                application/json:
                  schema: StudentSchema
            400: MalformedJson
            404: NotFound
            409: Conflict
            412: PreconditionFailed
            413: PayloadTooLarge
            415: UnsupportedMediaType
            422: ValidationError
        """
        expected = if_match_version(request)
        changes = read_json(request, self.settings.max_body_bytes)
        return _student_response(200, self.students.update_student(student_id, changes, expected_version=expected))

    @http("DELETE", STUDENT)
    def delete_student(self, request: Request, student_id: int) -> Response:
        """Delete a student; its status history is kept.
        ---
        delete:
          tags: [students]
          parameters: [StudentId]
          responses:
            204: {description: Deleted.}
            404: NotFound
        """
        self.students.delete_student(student_id)
        self.known_students.discard(student_id)
        return Response(status=204)

    # --- status --------------------------------------------------------------

    @http("POST", STUDENT + "/status")
    def request_status_change(self, request: Request, student_id: int) -> Response:
        """Ask for a status change; applied asynchronously.
        Answered once the request is durably queued. Repeating a request with
        the same ``Idempotency-Key`` returns the same request.
        ---
        post:
          tags: [status]
          parameters:
          - StudentId
          - {in: header, name: Idempotency-Key, schema: {type: string, maxLength: 200}}
          - {in: header, name: X-Actor, schema: {type: string, maxLength: 200}, description: Who asks.}
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
            400: MalformedJson
            404: NotFound
            409: Conflict
            413: PayloadTooLarge
            415: UnsupportedMediaType
            422: ValidationError
            503: ServiceUnavailable
            504: Timeout
        """
        key = idempotency_key(request)
        body = load(StatusChangeBodySchema(), read_json(request, self.settings.max_body_bytes))
        if student_id not in self.known_students:  # 404 now rather than a rejection later
            self.students.get_student(student_id)
            self.known_students.add(student_id)
        return _accepted(self._submit(request, student_id, body["status"], body["reason"], key))

    @http("POST", STUDENT + "/completion")
    def complete_course(self, request: Request, student_id: int) -> Response:
        """Complete the course: the status becomes ``completed`` through the lifecycle
        (rejected unless the student is ``active``), then a certificate is issued and
        the student is notified. Answered once the request is durably queued.
        ---
        post:
          tags: [completion]
          parameters:
          - StudentId
          - {in: header, name: Idempotency-Key, schema: {type: string, maxLength: 200}}
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
            400: MalformedJson
            404: NotFound
            409: Conflict
            413: PayloadTooLarge
            415: UnsupportedMediaType
            422: ValidationError
            503: ServiceUnavailable
            504: Timeout
        """
        key = idempotency_key(request)
        body = load(CompletionBodySchema(), read_json(request, self.settings.max_body_bytes, required=False))
        student = self.students.get_student(student_id)
        course = body["course"] or student["course"]
        return _accepted(self._submit(request, student_id, lifecycle.COMPLETED, "course completed", key, course))

    @http("POST", "/api/v1/certificate/")
    def legacy_certificate(self, request: Request) -> Response:
        """The original system's endpoint: finds the student by e-mail or creates it,
        then runs the completion flow (activating an ``enrolled`` student first).
        Answers 202 with the completion request to poll, not a premature 201.
        ---
        post:
          tags: [completion]
          parameters:
          - {in: header, name: Idempotency-Key, schema: {type: string, maxLength: 200}}
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
                  schema: StatusRequestSchema
            400: MalformedJson
            409: Conflict
            413: PayloadTooLarge
            415: UnsupportedMediaType
            422: ValidationError
            503: ServiceUnavailable
            504: Timeout
        """
        key = idempotency_key(request)
        fields = load(StudentCreateSchema(), read_json(request, self.settings.max_body_bytes))
        try:
            student = self.students.create_student(fields)
        except EmailAlreadyExists:
            student = self.students.get_student_by_email(fields["email"])
        if student["status"] == lifecycle.ENROLLED:
            # recorded (RPC) before the completion is queued, so applied before it
            self.status.request_status_change(
                student["id"],
                lifecycle.ACTIVE,
                reason="course started",
                actor=_actor(request),
                idempotency_key=f"{key}:active" if key else None,
            )
        accepted = self._submit(request, student["id"], lifecycle.COMPLETED, "course completed", key, fields["course"])
        return _accepted({**accepted, "student": student})

    def _submit(
        self,
        request: Request,
        student_id: int,
        status: str,
        reason: str | None,
        key: str | None,
        course: str | None = None,
    ) -> dict:
        """Queue a status change durably; a repeated idempotency key returns the original."""
        request_id = request_ids.issue(self.settings.request_id_secret, student_id, key)
        if key is not None:
            existing = self._repeat_of(request_id, student_id, status, key)
            if existing is not None:
                return existing
        self.dispatch(
            "status_change_requested",
            {
                "request_id": request_id,
                "student_id": student_id,
                "status": status,
                "reason": reason,
                "actor": _actor(request),
                "idempotency_key": key,
                "course": course,
            },
        )
        return {"request_id": request_id, "student_id": student_id, "status": status, "state": "pending"}

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

    # --- bulk jobs -----------------------------------------------------------

    @http("POST", "/status-requests/bulk")
    def submit_bulk_job(self, request: Request) -> Response:
        """Many status changes at once, as a job; answered once every row is stored.
        The body is a JSON array of ``{student_id | email, status, reason}`` or a CSV
        with a header naming those columns, read as a stream. Invalid rows are
        refused one by one (see ``GET /jobs/{id}``); they never fail the job. Nothing
        is applied unless the whole upload arrives. Repeating an upload with the
        same ``Idempotency-Key`` returns the same job.
        ---
        post:
          tags: [bulk]
          parameters:
          - {in: header, name: Idempotency-Key, schema: {type: string, maxLength: 200}}
          - {in: header, name: X-Actor, schema: {type: string, maxLength: 200}, description: Who asks.}
          requestBody:
            required: true
            content:
              application/json:
                schema: {type: array, items: JobRowSchema}
              text/csv:
                schema: {type: string, example: "student_id,status,reason\n7,active,term start\n"}
          responses:
            202:
              description: Accepted; poll ``Location``.
              headers:
                Location: {schema: {type: string}}
              content:
                application/json:
                  schema: JobSchema
            400: MalformedJson
            409: Conflict
            413: PayloadTooLarge
            415: UnsupportedMediaType
            422: ValidationError
            503: ServiceUnavailable
            504: Timeout
        """
        key = idempotency_key(request)
        limits = self.settings
        if request.mimetype not in (bulk.JSON, bulk.CSV):
            raise UnsupportedMediaType(
                "Send the rows as application/json or text/csv.", {"content_type": request.content_type or ""}
            )
        if request.content_length is not None and request.content_length > limits.bulk_max_bytes:
            raise PayloadTooLarge(
                f"The body exceeds {limits.bulk_max_bytes} bytes.", {"max_bytes": limits.bulk_max_bytes}
            )
        upload = self.status.create_job(idempotency_key=key, actor=_actor(request))
        job_id, token = upload["job_id"], upload["upload"]
        if upload["created"]:
            rows = bulk.read_rows(
                request.stream, request.mimetype, max_rows=limits.bulk_max_rows, max_bytes=limits.bulk_max_bytes
            )
            try:
                total = self._upload_rows(job_id, token, rows)
                self.status.seal_job(job_id, token, total)
            except BaseException:
                self._discard(job_id, token)
                raise
        job = self.status.get_job(job_id, limits.job_errors_shown)
        return json_response(202, job, {"Location": f"/jobs/{job_id}"})

    def _upload_rows(self, job_id: str, token: str, rows) -> int:
        """Send the rows in chunks, e-mails resolved; returns how many rows there were."""
        total = 0
        while chunk := list(islice(rows, CHUNK_ROWS)):
            total += len(chunk)
            valid = [r for r in chunk if isinstance(r, bulk.BulkRow)]  # the fields of jobs.Row
            refused = [jobs.invalid(r.row, r.details) for r in chunk if not isinstance(r, bulk.BulkRow)]
            accepted, unknown = jobs.resolve(valid, self.students.resolve_student_emails)
            self.status.add_job_rows(job_id, token, accepted, refused + unknown)
        return total

    def _discard(self, job_id: str, token: str) -> None:
        # if this fails too, the job stays unsealed: never applied, replaced by a retry with the same key
        with contextlib.suppress(ServiceError):
            self.status.discard_job(job_id, token)

    @http("GET", "/jobs/<job_id>")
    def get_job(self, request: Request, job_id: str) -> Response:
        """Progress of a bulk job: counts by state, rows/s so far and the first row errors
        (row number, code, reason), in row order.
        ---
        get:
          tags: [bulk]
          parameters: [{in: path, name: job_id, required: true, schema: {type: string, format: uuid}}]
          responses:
            200:
              description: The job.
              content:
                application/json:
                  schema: JobSchema
            404: NotFound
        """
        return json_response(200, self.status.get_job(job_id, self.settings.job_errors_shown))

    # --- certificates --------------------------------------------------------

    @http("GET", "/certificates/<code:code>")
    def get_certificate(self, request: Request, code: str) -> Response:
        """Public verification of a certificate: valid or revoked, name, course, issued at.
        ---
        get:
          tags: [certificates]
          parameters: [{in: path, name: code, required: true, schema: {type: string}}]
          responses:
            200:
              description: The certificate (``status`` is ``valid`` or ``revoked``).
              content:
                application/json:
                  schema: CertificateSchema
            404: NotFound
        """
        return json_response(200, self.certificates.get_certificate(code))

    @http("GET", "/certificates/<code:code>.pdf")
    def get_certificate_pdf(self, request: Request, code: str) -> Response:
        """The certificate as a PDF (marked REVOKED if it was revoked).
        ---
        get:
          tags: [certificates]
          parameters: [{in: path, name: code, required: true, schema: {type: string}}]
          responses:
            200:
              description: The PDF.
              content:
                application/pdf:
                  schema: {type: string, format: binary}
            404: NotFound
        """
        return _pdf_response(self.certificates.get_certificate_pdf(code))

    @http("GET", STUDENT + "/certificates")
    def list_certificates(self, request: Request, student_id: int) -> Response:
        """A student's certificates, oldest first.
        ---
        get:
          tags: [certificates]
          parameters: [StudentId]
          responses:
            200:
              description: The certificates.
              content:
                application/json:
                  schema: {type: array, items: CertificateSchema}
            404: NotFound
        """
        self.students.get_student(student_id)
        return json_response(200, self.certificates.list_certificates(student_id))

    @http("GET", "/status-requests/<request_id>")
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
            404: NotFound
        """
        try:
            return json_response(200, self.status.get_status_request(request_id))
        except StatusRequestNotFound:
            if not request_ids.is_issued(self.settings.request_id_secret, request_id):
                raise
            # issued by a gateway and durably queued, not yet recorded
            return json_response(200, {"request_id": request_id, "state": "pending", "queued": True})

    @http("GET", STUDENT + "/history")
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
            404: NotFound
            422: ValidationError
        """
        query = read_query(request, HistoryQuerySchema())
        self.students.get_student(student_id)
        return json_response(200, self.status.get_status_history(student_id, **query))


def _pdf_response(document: dict) -> Response:
    return Response(
        base64.b64decode(document["data"]),
        status=200,
        mimetype=document["content_type"],
        headers={"Content-Disposition": f'inline; filename="{document["filename"]}"'},
    )


def _actor(request: Request) -> str:
    return (request.headers.get("X-Actor") or "http")[:200]


def _student_response(status: int, student: dict, headers: dict | None = None) -> Response:
    return json_response(status, student, {"ETag": f'"{student["version"]}"', **(headers or {})})


def _accepted(request: dict[str, Any]) -> Response:
    return json_response(202, request, {"Location": f"/status-requests/{request['request_id']}"})
