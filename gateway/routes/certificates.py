"""Routes of certificates: public verification, the PDF, a student's list."""

from __future__ import annotations

import base64

from werkzeug.wrappers import Request, Response

from gateway.entrypoints import PUBLIC, http, json_response
from gateway.exceptions import BACKEND_ERRORS
from gateway.http import BODY_ERRORS, read_json
from gateway.routes.students import STUDENT
from services.exceptions import CertificateNotFound, StudentNotFound
from services.fields import Line
from services.schemas import REASON, StrictSchema, load


class RevocationBodySchema(StrictSchema):
    """Body of ``POST /certificates/{code}/revocation``."""

    reason = Line(REASON, required=True, metadata={"description": "Why, in one line: shown to whoever verifies it."})


class CertificateRoutes:
    """Uses ``GatewayService``'s ``certificates``, ``students`` and ``settings``."""

    @http("GET", "/certificates/<code:code>", scope=PUBLIC, errors=(CertificateNotFound, *BACKEND_ERRORS))
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
        """
        return json_response(200, self.certificates.get_certificate(code))

    @http("GET", "/certificates/<code:code>.pdf", scope=PUBLIC, errors=(CertificateNotFound, *BACKEND_ERRORS))
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
        """
        return _pdf_response(self.certificates.get_certificate_pdf(code))

    @http(
        "POST",
        "/certificates/<code:code>/revocation",
        scope="certificates:revoke",
        errors=(*BODY_ERRORS, CertificateNotFound, *BACKEND_ERRORS),
    )
    def revoke_certificate(self, request: Request, code: str) -> Response:
        """Revoke a certificate: verification and its PDF say so from now on; revoking again changes nothing.
        ---
        post:
          tags: [certificates]
          parameters: [{in: path, name: code, required: true, schema: {type: string}}]
          requestBody:
            required: true
            content:
              application/json:
                schema: RevocationBodySchema
          responses:
            200:
              description: The certificate, revoked.
              content:
                application/json:
                  schema: CertificateSchema
        """
        body = load(RevocationBodySchema(), read_json(request, self.settings.max_body_bytes))
        return json_response(200, self.certificates.revoke_certificate(code, body["reason"]))

    @http("GET", STUDENT + "/certificates", scope="students:read", errors=(StudentNotFound, *BACKEND_ERRORS))
    def list_certificates(self, request: Request, student_id: int) -> Response:
        """A student's certificates, oldest first.
        ---
        get:
          tags: [certificates]
          parameters: [StudentId]
          responses:
            200:
              description: The certificates, each with the correlation id of the completion that issued it.
              content:
                application/json:
                  schema: {type: array, items: StudentCertificateSchema}
        """
        self.students.get_student(student_id)
        return json_response(200, self.certificates.list_certificates(student_id))


def _pdf_response(document: dict) -> Response:
    return Response(
        base64.b64decode(document["data"]),
        status=200,
        mimetype=document["content_type"],
        headers={"Content-Disposition": f'inline; filename="{document["filename"]}"'},
    )
