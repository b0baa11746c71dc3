"""Routes of the API's own documentation, all public: the OpenAPI document rendered by Redoc
(``/docs``), the messaging API as AsyncAPI (``/asyncapi.json``) and as a page
(``/docs/messaging``), and the files under ``gateway/static/`` (``/static/<path>``)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from werkzeug.exceptions import NotFound
from werkzeug.utils import send_from_directory
from werkzeug.wrappers import Request, Response

from gateway.asyncapi import build_asyncapi
from gateway.entrypoints import PUBLIC, http, json_response
from gateway.exceptions import RouteNotFound
from gateway.pages import messaging_page, redoc_page

STATIC = Path(__file__).resolve().parents[1] / "static"
REDOC = "vendor/redoc-2.5.4/redoc.standalone.js"  # see gateway/static/vendor/README.md
VENDOR = "vendor/"  # versioned by directory name: cached for a year
YEAR = 365 * 24 * 3600
CONTENT_TYPES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".html": "text/html",
    ".md": "text/markdown",
    ".txt": "text/plain",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
}
# the pages load nothing but what the gateway serves; Redoc needs inline styles and a worker from a
# blob, and would show its vendor's logo from a CDN (img-src keeps the browser from fetching it)
REDOC_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; base-uri 'none'; form-action 'none'"
)
MESSAGING_POLICY = "default-src 'none'; style-src 'self'; base-uri 'none'; form-action 'none'"


class DocsRoutes:
    """Needs nothing of ``GatewayService``: the documents are made from the code."""

    @http("GET", "/docs", scope=PUBLIC)
    def docs(self, request: Request) -> Response:
        """The HTTP API: this OpenAPI document, rendered by Redoc (vendored: nothing is fetched elsewhere).
        ---
        get:
          tags: [documentation]
          responses:
            200:
              description: An HTML page that renders /openapi.json in the browser.
              content:
                text/html:
                  schema: {type: string}
        """
        return _page(_redoc_page(), REDOC_POLICY)

    @http("GET", "/asyncapi.json", scope=PUBLIC)
    def asyncapi(self, request: Request) -> Response:
        """The messaging API (RPC methods, events, queues) as an AsyncAPI 3.0 document.
        ---
        get:
          tags: [documentation]
          responses:
            200:
              description: The AsyncAPI 3.0 document, generated from the services' code.
              content:
                application/json:
                  schema: {type: object}
        """
        return json_response(200, build_asyncapi())

    @http("GET", "/docs/messaging", scope=PUBLIC)
    def messaging_docs(self, request: Request) -> Response:
        """The messaging API as a page: per event and RPC method its exchange, routing key, queues and fields.
        ---
        get:
          tags: [documentation]
          responses:
            200:
              description: An HTML page, made from /asyncapi.json on the server.
              content:
                text/html:
                  schema: {type: string}
        """
        return _page(_messaging_page(), MESSAGING_POLICY)

    @http("GET", "/static/<path:name>", scope=PUBLIC, errors=(RouteNotFound,))
    def static_file(self, request: Request, name: str) -> Response:
        """A file under gateway/static/ (vendored libraries, the pages' styles).
        ---
        get:
          tags: [documentation]
          description: >-
            Files under ``vendor/`` are versioned by their directory's name and cached for a year;
            others are revalidated (``no-cache``). Each answer has an ``ETag``: a request whose
            ``If-None-Match`` names it is answered 304, without a body.
          parameters:
            - {in: path, name: name, required: true, schema: {type: string}, example: vendor/README.md}
            - {in: header, name: If-None-Match, required: false, schema: {type: string}}
          responses:
            200:
              description: The file, with its ``Content-Type``, ``Cache-Control`` and ``ETag``.
              content:
                "*/*":
                  schema: {type: string, format: binary}
            304: {description: "Not modified: the ETag named in If-None-Match is current."}
        """
        return static_response(request, name)


def static_response(request: Request, name: str) -> Response:
    """``name`` under :data:`STATIC`, whole (no ranges), or :class:`RouteNotFound` for anything
    missing or outside it (``..``, an absolute path, a NUL: Werkzeug's ``safe_join``)."""
    # no Range: a part of a file, or a 416 outside the error table, is no use for these files
    environ = {k: v for k, v in request.environ.items() if k not in ("HTTP_RANGE", "HTTP_IF_RANGE")}
    vendored = name.startswith(VENDOR)
    try:
        response = send_from_directory(
            STATIC,
            name,
            environ,
            mimetype=CONTENT_TYPES.get(Path(name).suffix, "application/octet-stream"),
            max_age=YEAR if vendored else None,
        )
    except NotFound:
        raise RouteNotFound("No such file.", {"path": request.path}) from None
    if vendored:
        response.cache_control.immutable = True
    response.headers.pop("Accept-Ranges", None)
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _page(html: str, policy: str) -> Response:
    headers = {"Content-Security-Policy": policy, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer"}
    return Response(html, status=200, mimetype="text/html", headers=headers)


# relative URLs, so that the pages work behind a proxy that serves the gateway under a prefix
@lru_cache(maxsize=1)
def _redoc_page() -> str:
    return redoc_page("openapi.json", f"static/{REDOC}", "docs/messaging")


@lru_cache(maxsize=1)
def _messaging_page() -> str:
    links = {"asyncapi": "../asyncapi.json", "openapi_docs": "../docs", "stylesheet": "../static/docs/messaging.css"}
    return messaging_page(build_asyncapi(), links)
