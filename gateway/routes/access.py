"""Routes of access control: API keys (``keys:admin``) and the audit trail (``ops:read``)."""

from __future__ import annotations

from werkzeug.wrappers import Request, Response

from gateway.access import store
from gateway.access.schemas import AuditPageSchema, AuditQuerySchema, CreatedKeySchema, KeyCreateSchema, KeySchema
from gateway.entrypoints import http, json_response
from gateway.exceptions import ApiKeyNotFound
from gateway.http import BODY_ERRORS, read_json, read_query
from services.exceptions import ValidationFailed
from services.schemas import load

KEY = "/keys/<key:key_id>"


class AccessRoutes:
    """Uses ``GatewayService``'s ``access`` and ``settings``."""

    @http("POST", "/keys", scope="keys:admin", errors=BODY_ERRORS)
    def create_key(self, request: Request) -> Response:
        """Create an API key; the answer holds the key itself, this once.
        ---
        post:
          tags: [keys]
          requestBody:
            required: true
            content:
              application/json:
                schema: KeyCreateSchema
          responses:
            201:
              description: Created; ``api_key`` is shown only now.
              headers:
                Location: {schema: {type: string}}
              content:
                application/json:
                  schema: CreatedKeySchema
        """
        body = load(KeyCreateSchema(), read_json(request, self.settings.max_body_bytes))
        try:
            record, api_key = store.create_key(
                self.access.Session, self.access.secret_key, created_by=request.principal.name, **body
            )
        except ValueError as exc:  # rate without burst, and the like
            raise ValidationFailed(str(exc), {"_schema": [str(exc)]}) from None
        self.access.reload()  # this gateway knows it at once; the others within their refresh period
        created = CreatedKeySchema().dump({**record, "api_key": api_key})
        return json_response(201, created, {"Location": f"/keys/{record['id']}", "Cache-Control": "no-store"})

    @http("GET", "/keys", scope="keys:admin")
    def list_keys(self, request: Request) -> Response:
        """Every API key, oldest first (never a secret).
        ---
        get:
          tags: [keys]
          responses:
            200:
              description: The keys.
              content:
                application/json:
                  schema: KeyPageSchema
        """
        return json_response(200, {"items": KeySchema(many=True).dump(store.list_keys(self.access.Session))})

    @http("GET", KEY, scope="keys:admin", errors=(ApiKeyNotFound,))
    def get_key(self, request: Request, key_id: str) -> Response:
        """One API key.
        ---
        get:
          tags: [keys]
          parameters: [KeyId]
          responses:
            200:
              description: The key.
              content:
                application/json:
                  schema: KeySchema
        """
        return json_response(200, KeySchema().dump(_key(lambda: store.get_key(self.access.Session, key_id), key_id)))

    @http("DELETE", KEY, scope="keys:admin", errors=(ApiKeyNotFound,))
    def revoke_key(self, request: Request, key_id: str) -> Response:
        """Revoke an API key: refused by every gateway within ``API_KEY_REFRESH_SECONDS``; kept in lists.
        ---
        delete:
          tags: [keys]
          parameters: [KeyId]
          responses:
            200:
              description: The key, revoked (revoking again changes nothing).
              content:
                application/json:
                  schema: KeySchema
        """
        record = _key(lambda: store.revoke_key(self.access.Session, key_id), key_id)
        self.access.reload()
        return json_response(200, KeySchema().dump(record))

    @http("GET", "/audit", scope="ops:read", errors=(ValidationFailed,))
    def list_audit(self, request: Request) -> Response:
        """The audit trail, newest first: every change and every refusal (401, 403, 429).
        ---
        get:
          tags: [operations]
          parameters:
          - in: query
            schema: AuditQuerySchema
          responses:
            200:
              description: One page; pass ``next_cursor`` as ``cursor`` for the next.
              content:
                application/json:
                  schema: AuditPageSchema
        """
        page = store.list_audit(self.access.Session, **read_query(request, AuditQuerySchema()))
        return json_response(200, AuditPageSchema().dump(page))


def _key(fetch, key_id: str) -> dict:
    try:
        return fetch()
    except store.KeyNotFound:
        raise ApiKeyNotFound("No API key with this id.", {"key_id": key_id}) from None
