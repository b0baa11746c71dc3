"""Routes of bulk jobs: many status changes uploaded at once, then polled."""

from __future__ import annotations

import contextlib
import contextvars
from collections import deque
from collections.abc import Callable, Iterator
from itertools import islice
from typing import Any

import eventlet
from werkzeug.wrappers import Request, Response

from gateway import bulk
from gateway.entrypoints import http, json_response
from gateway.exceptions import BACKEND_ERRORS, PayloadTooLarge, UnsupportedMediaType
from gateway.http import BODY_ERRORS, actor, idempotency_key
from services import jobs
from services.exceptions import JobNotFound, JobUploadSuperseded, ServiceError

CHUNK_ROWS = 2_000  # rows per add_job_rows call while an upload streams in


class BulkJobRoutes:
    """Uses ``GatewayService``'s ``status``, ``students``, ``settings`` and ``correlation``."""

    @http(
        "POST", "/status-requests/bulk", scope="jobs:write", errors=(*BODY_ERRORS, JobUploadSuperseded, *BACKEND_ERRORS)
    )
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
          parameters: [IdempotencyKey, Actor]
          requestBody:
            required: true
            content:
              application/json:
                schema:
                  type: array
                  items:
                    description: A row as JobRow; any other value is a row refused on its own.
                    anyOf: [JobRowSchema, {}]
              text/csv:
                schema: {$ref: "#/components/schemas/CsvUpload"}
          responses:
            202:
              description: Accepted; poll ``Location``.
              headers:
                Location: {schema: {type: string}}
              content:
                application/json:
                  schema: JobSchema
        """
        key, who = idempotency_key(request), actor(request)
        limits = self.settings
        if request.mimetype not in (bulk.JSON, bulk.CSV):
            raise UnsupportedMediaType(
                "Send the rows as application/json or text/csv.", {"content_type": request.content_type or ""}
            )
        if request.content_length is not None and request.content_length > limits.bulk_max_bytes:
            raise PayloadTooLarge(
                f"The body exceeds {limits.bulk_max_bytes} bytes.", {"max_bytes": limits.bulk_max_bytes}
            )
        upload = self.status.create_job(
            idempotency_key=key, actor=who.name, on_behalf_of=who.on_behalf_of, correlation_id=self.correlation
        )
        job_id, token = upload["job_id"], upload["upload"]
        rows = bulk.read_rows(
            request.stream, request.mimetype, max_rows=limits.bulk_max_rows, max_bytes=limits.bulk_max_bytes
        )
        if upload["created"]:
            try:
                total = self._upload_rows(job_id, token, rows)
                self.status.seal_job(job_id, token, total)
            except BaseException:
                self._discard(job_id, token)
                raise
        else:  # a repeat gets the job, or the error its body earns, as the first upload did
            deque(rows, maxlen=0)
        job = self.status.get_job(job_id, limits.job_errors_shown)
        return json_response(202, job, {"Location": f"/jobs/{job_id}"})

    def _upload_rows(self, job_id: str, token: str, rows: Iterator) -> int:
        """Send the rows in chunks, e-mails resolved; returns how many rows there were. A chunk is
        read and resolved while the one before it is being stored: one call in flight, so the status
        service still receives the chunks one at a time, in order; when reading fails, the chunk in
        flight is waited for before the error goes on (a discard never races a chunk)."""
        total, sending = 0, None
        try:
            while chunk := list(islice(rows, CHUNK_ROWS)):
                total += len(chunk)
                valid = [r for r in chunk if isinstance(r, bulk.BulkRow)]  # the fields of jobs.Row
                refused = [jobs.invalid(r.row, r.details) for r in chunk if not isinstance(r, bulk.BulkRow)]
                accepted, unknown = jobs.resolve(valid, self.students.resolve_student_emails)
                if sending is not None:
                    sending.result()  # its error (the job superseded, the service away) ends the upload
                sending = InFlight(self.status.add_job_rows, job_id, token, accepted, refused + unknown)
            if sending is not None:
                sending.result()
        except BaseException:
            if sending is not None:
                sending.wait()
            raise
        return total

    def _discard(self, job_id: str, token: str) -> None:
        # if this fails too, the job stays unsealed: never applied, replaced by a retry with the same key
        with contextlib.suppress(ServiceError):
            self.status.discard_job(job_id, token)

    @http("GET", "/jobs/<uuid:job_id>", scope="status:read", errors=(JobNotFound, *BACKEND_ERRORS))
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
        """
        return json_response(200, self.status.get_job(job_id, self.settings.job_errors_shown))


class InFlight:
    """``function(*args)`` started at once in a greenthread that keeps the caller's context (its
    correlation id and span); ``result()`` waits for it and returns its value or raises its error."""

    def __init__(self, function: Callable, *args: Any):
        context = contextvars.copy_context()
        self._thread = eventlet.spawn(self._outcome, context.run, function, *args)
        eventlet.sleep(0)  # the call is on its way

    @staticmethod
    def _outcome(run: Callable, *args: Any) -> tuple[Any, BaseException | None]:
        try:
            return run(*args), None
        except Exception as exc:  # kept for result(): not a traceback from the hub
            return None, exc

    def wait(self) -> None:
        self._thread.wait()

    def result(self) -> Any:
        value, error = self._thread.wait()
        if error is not None:
            raise error
        return value
