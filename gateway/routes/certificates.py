"""Routes of certificates: public verification (a page for people, JSON for programs), the PDF,
the signed credential, the issuer's keys and revocation lists, a student's list."""

from __future__ import annotations

import base64

from werkzeug.wrappers import Request, Response

from gateway import verification
from gateway.entrypoints import PUBLIC, http, json_response
from gateway.exceptions import BACKEND_ERRORS
from gateway.http import BODY_ERRORS, read_json
from gateway.routes.students import STUDENT
from services.credentials import CONTEXTS, MEDIA_TYPE, Issuer
from services.exceptions import CertificateNotFound, StatusListNotFound, StudentNotFound
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

        A browser (``Accept: text/html``, as after scanning the QR code) gets a page in its
        language (``?lang=en|pt_BR``, else ``Accept-Language``), without the e-mail address;
        an unknown code gets a 404 page. Everyone else gets JSON.
        ---
        get:
          tags: [certificates]
          parameters:
            - {in: path, name: code, required: true, schema: {type: string}}
            - {in: query, name: lang, required: false, schema: {type: string},
               description: "The page's language, en or pt_BR (HTML only; any other value: Accept-Language decides)."}
          responses:
            200:
              description: The certificate (``status`` is ``valid`` or ``revoked``).
              headers: {Vary: {schema: {type: string}, description: "Accept, Accept-Language"}}
              content:
                application/json:
                  schema: CertificateSchema
                text/html:
                  schema: {type: string}
        """
        if not verification.wants_html(request):
            return json_response(200, self.certificates.get_certificate(code), {"Vary": "Accept, Accept-Language"})
        try:
            return verification.page(request, self.certificates.get_certificate(code), self.settings)
        except CertificateNotFound:
            return verification.page(request, None, self.settings, status=404)
        except BACKEND_ERRORS:
            return verification.page(request, None, self.settings, status=503)

    @http("GET", "/certificates/<code:code>/credential", scope=PUBLIC, errors=(CertificateNotFound, *BACKEND_ERRORS))
    def get_certificate_credential(self, request: Request, code: str) -> Response:
        """The certificate's signed Open Badges 3.0 credential: a compact JWS (VC-JWT), verifiable
        with the keys at ``/.well-known/jwks.json``.
        ---
        get:
          tags: [certificates]
          parameters: [{in: path, name: code, required: true, schema: {type: string}}]
          responses:
            200:
              description: The credential as a JWT.
              content:
                application/vc+jwt:
                  schema: {type: string}
        """
        credential = self.certificates.get_certificate_credential(code)
        return _jwt_response(credential["jwt"], credential["filename"])

    @http(
        "GET",
        "/certificates/<code:code>/credential.json",
        scope=PUBLIC,
        errors=(CertificateNotFound, *BACKEND_ERRORS),
    )
    def get_certificate_credential_json(self, request: Request, code: str) -> Response:
        """The certificate's credential, decoded: the JWT's payload (an ``OpenBadgeCredential``
        with its ``iss``/``jti``/``nbf``/``sub`` claims). Only the JWT proves it.
        ---
        get:
          tags: [certificates]
          parameters: [{in: path, name: code, required: true, schema: {type: string}}]
          responses:
            200:
              description: The credential.
              content:
                application/json:
                  schema: {type: object}
        """
        return json_response(200, self.certificates.get_certificate_credential(code)["credential"])

    @http("GET", "/.well-known/jwks.json", scope=PUBLIC, errors=BACKEND_ERRORS)
    def get_jwks(self, request: Request) -> Response:
        """The issuer's public keys (JWK Set): the one that signs now and every one that signed
        before, so older credentials still verify.
        ---
        get:
          tags: [certificates]
          responses:
            200:
              description: The JWK Set; each key's ``kid`` is what the credentials' JWS headers name.
              content:
                application/json:
                  schema: {type: object}
        """
        return json_response(200, self.certificates.get_jwks(), {"Cache-Control": "public, max-age=300"})

    @http("GET", "/credentials/status/<id:list_id>", scope=PUBLIC, errors=(StatusListNotFound, *BACKEND_ERRORS))
    def get_status_list(self, request: Request, list_id: int) -> Response:
        """A revocation status list (W3C Bitstring Status List credential, signed as a JWT); a
        credential's ``credentialStatus`` names its list and bit.
        ---
        get:
          tags: [certificates]
          parameters: [{in: path, name: list_id, required: true, schema: {type: integer}}]
          responses:
            200:
              description: The status list credential as a JWT.
              content:
                application/vc+jwt:
                  schema: {type: string}
        """
        listing = self.certificates.get_status_list(list_id)
        return _jwt_response(listing["jwt"], f"status-list-{list_id}.jwt", cache="public, max-age=60")

    @http("GET", "/credentials/status/<id:list_id>.json", scope=PUBLIC, errors=(StatusListNotFound, *BACKEND_ERRORS))
    def get_status_list_json(self, request: Request, list_id: int) -> Response:
        """A revocation status list, decoded (only the JWT proves it).
        ---
        get:
          tags: [certificates]
          parameters: [{in: path, name: list_id, required: true, schema: {type: integer}}]
          responses:
            200:
              description: The status list credential.
              content:
                application/json:
                  schema: {type: object}
        """
        return json_response(200, self.certificates.get_status_list(list_id)["credential"])

    @http("GET", "/issuer", scope=PUBLIC)
    def get_issuer(self, request: Request) -> Response:
        """The issuer profile the credentials name (Open Badges 3.0 ``Profile``).
        ---
        get:
          tags: [certificates]
          responses:
            200:
              description: The issuer profile.
              content:
                application/json:
                  schema: {type: object}
        """
        profile = {"@context": CONTEXTS, **Issuer.configured(self.settings).profile()}
        return json_response(200, profile)

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


def _jwt_response(token: str, filename: str, cache: str | None = None) -> Response:
    headers = {"Content-Disposition": f'inline; filename="{filename}"'}
    if cache:
        headers["Cache-Control"] = cache
    return Response(token, status=200, mimetype=MEDIA_TYPE, headers=headers)


def _pdf_response(document: dict) -> Response:
    return Response(
        base64.b64decode(document["data"]),
        status=200,
        mimetype=document["content_type"],
        headers={"Content-Disposition": f'inline; filename="{document["filename"]}"'},
    )
