"""Routes of ``/students``: create, list, read, update, delete."""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

from gateway.entrypoints import JSON, http, json_response
from gateway.exceptions import BACKEND_ERRORS
from gateway.http import BODY_ERRORS, if_match_version, read_json, read_query
from gateway.student_reads import Entry
from services.exceptions import EmailAlreadyExists, StudentNotFound, ValidationFailed, VersionMismatch
from services.schemas import ListStudentsSchema

STUDENT = "/students/<id:student_id>"


class StudentRoutes:
    """Uses ``GatewayService``'s ``students``, ``student_reads``, ``known_students`` and ``settings``."""

    @http("POST", "/students", scope="students:write", errors=(*BODY_ERRORS, EmailAlreadyExists, *BACKEND_ERRORS))
    def create_student(self, request: Request) -> Response:
        """Create a student (starts ``enrolled``), optionally with the ``language`` of their mail.
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
        """
        student = self.students.create_student(read_json(request, self.settings.max_body_bytes))
        self.student_reads.wrote(student)
        return _student_response(201, Entry(student), {"Location": f"/students/{student['id']}"})

    @http("GET", "/students", scope="students:read", errors=(ValidationFailed, *BACKEND_ERRORS))
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
        """
        return json_response(200, self.students.list_students(**read_query(request, ListStudentsSchema())))

    @http("GET", STUDENT, scope="students:read", errors=(StudentNotFound, *BACKEND_ERRORS))
    def get_student(self, request: Request, student_id: int) -> Response:
        """One student; ``ETag`` changes with it (its profile or its status): an ``If-None-Match``
        that names it is answered 304, without a body. Read from this gateway's copy of the
        students when it has one: a change made through this gateway shows at once; one made
        elsewhere once its event has reached the gateway (usually within milliseconds).
        ---
        get:
          tags: [students]
          parameters:
          - StudentId
          - {in: header, name: If-None-Match, required: false, schema: {type: string}}
          responses:
            200:
              description: The student.
              headers:
                ETag: {schema: {type: string}, description: '``"<version>.<status_version>"``'}
              content:
                application/json:
                  schema: StudentSchema
            304:
              description: "Not modified: the ETag named in If-None-Match is current."
              headers:
                ETag: {schema: {type: string}}
        """
        entry = self.student_reads.read(student_id, self.students.get_student)
        if request.if_none_match.contains_weak(entry.tag):
            return Response(status=304, headers={"ETag": entry.etag})
        return _student_response(200, entry)

    @http(
        "PATCH",
        STUDENT,
        scope="students:write",
        errors=(*BODY_ERRORS, StudentNotFound, EmailAlreadyExists, VersionMismatch, *BACKEND_ERRORS),
    )
    def update_student(self, request: Request, student_id: int) -> Response:
        """Change name, e-mail, course or language; ``If-Match: <version>`` guards against lost updates.
        ---
        patch:
          tags: [students]
          parameters: [StudentId, IfMatch]
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
        """
        expected = if_match_version(request)
        changes = read_json(request, self.settings.max_body_bytes)
        student = self.students.update_student(student_id, changes, expected_version=expected)
        self.student_reads.wrote(student)
        return _student_response(200, Entry(student))

    @http("DELETE", STUDENT, scope="students:write", errors=(StudentNotFound, *BACKEND_ERRORS))
    def delete_student(self, request: Request, student_id: int) -> Response:
        """Delete a student; its status history is kept.
        ---
        delete:
          tags: [students]
          parameters: [StudentId]
          responses:
            204: {description: Deleted.}
        """
        self.students.delete_student(student_id)
        self.student_reads.wrote_deletion(student_id)
        self.known_students.discard(student_id)
        return Response(status=204)


def _student_response(status: int, entry: Entry, headers: dict | None = None) -> Response:
    return Response(entry.body, status=status, headers={"ETag": entry.etag, **(headers or {})}, mimetype=JSON)
