"""Routes of certificates: public verification, the PDF, a student's list."""

from __future__ import annotations

import base64

from werkzeug.wrappers import Request, Response

from gateway.entrypoints import http, json_response
from gateway.exceptions import BACKEND_ERRORS
from gateway.routes.students import STUDENT
from services.exceptions import CertificateNotFound, StudentNotFound


class CertificateRoutes:
    """Uses ``GatewayService``'s ``certificates`` and ``students``."""

    @http("GET", "/certificates/<code:code>", errors=(CertificateNotFound, *BACKEND_ERRORS))
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

    @http("GET", "/certificates/<code:code>.pdf", errors=(CertificateNotFound, *BACKEND_ERRORS))
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

    @http("GET", STUDENT + "/certificates", errors=(StudentNotFound, *BACKEND_ERRORS))
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
