"""The console's pages: ``@page(method, url, scope=...)``, HTML in and out, signed in by cookie.

A console page is an HTTP route of the gateway like any other (same server, same access gate,
same audit trail, same metrics and traces), with three differences:

- who is asking comes from the session cookie (:mod:`gateway.console.sessions`), not an
  ``Authorization`` header; no session (or an expired one) is a redirect to the sign-in page;
- a POST must carry the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``);
- refusals and errors are HTML pages, never JSON, never a traceback.

Pages are not in the OpenAPI document.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Request, Response

from gateway.access.keys import SCOPES, allows
from gateway.console import sessions
from gateway.entrypoints import PUBLIC, JsonHttpEntrypoint, status_for
from gateway.exceptions import AccessDenied, InsufficientScope, RateLimited
from services.exceptions import ServiceError
from services.infra.settings import Settings

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
templates = Environment(  # the templates ship with the code: read once, not stat()ed at every page
    loader=FileSystemLoader(TEMPLATES),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
)
UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# what a page may load: itself only; inline styles (the stylesheet is in the layout), no scripts from elsewhere
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class CsrfRefused(AccessDenied):
    code = "CSRF_REFUSED"


class ConsoleEntrypoint(JsonHttpEntrypoint):
    """``@page("GET", "/ops/requests", scope="ops:read")``."""

    documented = False

    def setup(self) -> None:
        super().setup()
        settings = Settings.from_config(self.container.config)
        self.secret = settings.require("api_key_secret")
        self.lifetime = settings.console_session_seconds
        self.max_body_bytes = settings.max_body_bytes

    def handle_request(self, request: Request) -> Response:
        request.console_session = sessions.read(self.secret, request.cookies.get(sessions.COOKIE))
        request.console = self
        request.shallow = False  # forms are read before the worker runs (the CSRF token)
        request.max_content_length = request.max_form_memory_size = self.max_body_bytes
        response = super().handle_request(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    def admit(self, request: Request) -> tuple[Any, Any]:
        session = request.console_session
        if session is None:
            raise SignInNeeded("Sign in to use the console.", {})
        principal, verdict = self.gate.admit_key(session.key_id, self.scope)
        if request.method in UNSAFE and not sessions.csrf_ok(self.secret, session.nonce, _csrf_sent(request)):
            raise CsrfRefused(
                "This form could not be accepted: it is from another page or an earlier sign-in. "
                "Reload the page and try again.",
                {},
                principal=principal,
            )
        return principal, verdict

    def refusal(self, request: Request, exc: AccessDenied) -> Response:
        if isinstance(exc, SignInNeeded) or (exc.principal is None and not isinstance(exc, RateLimited)):
            if request.method == "GET":
                return redirect(f"/ops/login?next={quote(request.full_path.rstrip('?'), safe='/')}")
            return error_page(request, 401, "Your session has ended. Sign in again.")
        if isinstance(exc, InsufficientScope):
            scope = exc.details.get("required_scope", self.scope)
            message = f"Your key lacks the scope {scope} ({SCOPES.get(scope, scope)})."
            return error_page(request, 403, message)
        if isinstance(exc, CsrfRefused):
            return error_page(request, 403, exc.message)
        return error_page(request, status_for(exc), exc.message)

    def response_from_exception(self, exc: Exception) -> Response:
        if isinstance(exc, HTTPException):  # e.g. a form larger than MAX_BODY_BYTES: 413
            return error_page(None, exc.code or 400, exc.description or "This request could not be read.")
        if isinstance(exc, ServiceError):
            return error_page(None, status_for(exc), exc.message)
        log.error("unexpected error in a console page", exc_info=exc)
        return error_page(None, 500, "Something went wrong on our side; it is logged. Try again.")


class SignInNeeded(AccessDenied):
    code = "UNAUTHENTICATED"


def _csrf_sent(request: Request) -> str | None:
    try:
        return request.headers.get("X-CSRF-Token") or request.form.get("csrf")
    except HTTPException:  # a body too large or not a form: no token
        return None


page = ConsoleEntrypoint.decorator


# --- rendering ------------------------------------------------------------------


def render(request: Request, template: str, http_status: int = 200, **context: Any) -> Response:
    """An HTML page: ``template`` with ``context``, the signed-in key and its CSRF token. Its one
    inline script (the live updates) runs by the page's own nonce; nothing else may run."""
    nonce = secrets.token_urlsafe(16)
    body = templates.get_template(template).render(**_common(request), nonce=nonce, **context)
    response = Response(body, status=http_status, mimetype="text/html")
    response.headers["Content-Security-Policy"] = (
        f"{SECURITY_HEADERS['Content-Security-Policy']}; script-src 'nonce-{nonce}'; connect-src 'self'"
    )
    return response


def _common(request: Request | None) -> dict:
    principal = getattr(request, "principal", None) if request is not None else None
    session = getattr(request, "console_session", None) if request is not None else None
    console = getattr(request, "console", None) if request is not None else None
    csrf = sessions.csrf_token(console.secret, session.nonce) if session is not None and console else None
    return {
        "principal": principal,
        "csrf": csrf,
        "can_act": principal is not None and allows(principal.scopes, "ops:write"),
        "path": request.path if request is not None else "",
    }


def error_page(request: Request | None, status: int, message: str) -> Response:
    return render(request, "error.html", http_status=status, status_code=status, message=message)


def redirect(location: str, status: int = 303) -> Response:
    return Response("", status=status, headers={"Location": location})


__all__ = ["PUBLIC", "ConsoleEntrypoint", "error_page", "page", "redirect", "render"]
