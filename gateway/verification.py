"""The certificate verification page: what a person sees after scanning a certificate's QR code.

``GET /certificates/{code}`` answers this page to a browser (``Accept: text/html``) and JSON to
everyone else. The page is in the reader's language (``?lang=``, else ``Accept-Language``, else
``DEFAULT_LANGUAGE``), shows no e-mail address, runs no script, and says how to check the
certificate offline with its signed credential::

    return verification.page(request, certificate_or_none, settings)
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

from jinja2 import FileSystemLoader, StrictUndefined
from werkzeug.wrappers import Request, Response

from services import i18n
from services.credentials import Issuer
from services.infra.settings import Settings

TEMPLATES = Path(__file__).parent / "templates"
_loader = FileSystemLoader(TEMPLATES)
HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; form-action 'none'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Vary": "Accept, Accept-Language",
    "Cache-Control": "no-cache",  # a revocation shows at the next visit
}


def wants_html(request: Request) -> bool:
    """Whether the caller prefers a page to JSON (a browser does; curl and API clients do not)."""
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) == "text/html"


def language(request: Request, settings: Settings) -> str:
    language = i18n.normalize(request.args.get("lang"))
    return language or i18n.negotiate(request.headers.get("Accept-Language"), settings.default_language)


def page(request: Request, certificate: dict | None, settings: Settings, status: int = 200) -> Response:
    """The page for ``certificate`` (a ``get_certificate`` answer), or the not-found page (None)
    with ``status`` 404, or the unavailable page with 503."""
    lang = language(request, settings)
    environment = i18n.environment(_loader, lang, autoescape=True, undefined=StrictUndefined, auto_reload=False)
    context = {
        "lang": lang,
        "html_lang": lang.replace("_", "-"),
        "status_code": status,
        "certificate": certificate,
        "issuer": Issuer.configured(settings),
        "switch": {other: "?" + urlencode({"lang": other}) for other in i18n.LANGUAGES if other != lang},
        "language_names": {"en": "English", "pt_BR": "Português"},
        "date": lambda value: i18n.format_date(_parse(value), lang) if value else "",
    }
    body = environment.get_template("verification.html").render(**context)
    return Response(body, status=status, mimetype="text/html", headers=HEADERS)


def _parse(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(value.replace("Z", "+00:00"))
