"""Routes of ``/students``: create, list, read, update, delete."""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

from gateway.entrypoints import http, json_response
from gateway.exceptions import BACKEND_ERRORS
from gateway.http import BODY_ERRORS, if_match_version, read_json, read_query
from services.exceptions import EmailAlreadyExists, StudentNotFound, ValidationFailed, VersionMismatch
from services.schemas import ListStudentsSchema

STUDENT = "/students/<id:student_id>"


class StudentRoutes:
    """Uses ``GatewayService``'s ``students``, ``known_students`` and ``settings``."""

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
        return _student_response(201, student, {"Location": f"/students/{student['id']}"})

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
        """
        return _student_response(200, self.students.get_student(student_id))

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
        return _student_response(200, self.students.update_student(student_id, changes, expected_version=expected))

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
        self.known_students.discard(student_id)
        return Response(status=204)


def _student_response(status: int, student: dict, headers: dict | None = None) -> Response:
    return json_response(status, student, {"ETag": f'"{student["version"]}"', **(headers or {})})
