"""The documentation routes: static files (path safety, content types, caching, ETag and 304),
the Redoc page, the messaging page (complete, escaped), and the record of the vendored files."""

from __future__ import annotations

import copy
import hashlib
import json
import re
from pathlib import Path

import pytest
from werkzeug.exceptions import HTTPException
from werkzeug.routing import Map, Rule
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request, Response

from gateway.asyncapi import build_asyncapi
from gateway.entrypoints import PUBLIC, error_response
from gateway.exceptions import RouteNotFound
from gateway.pages import messaging_page, topic_matches
from gateway.routes.docs import REDOC, STATIC, DocsRoutes, static_response
from services import schemas
from services.infra.topology import SUBSCRIPTIONS

ROOT = Path(__file__).resolve().parents[2]
REDOC_JS = STATIC / REDOC
CSS = "docs/messaging.css"
(STATIC_ROUTE,) = DocsRoutes.static_file.nameko_entrypoints
ROUTES = Map([Rule(STATIC_ROUTE.url, endpoint="static", methods=["GET"])])


def request(path: str, headers: dict | None = None) -> Request:
    return Request(EnvironBuilder(path=path, headers=headers).get_environ())


def get(path: str, headers: dict | None = None) -> Response:
    """``GET path`` as the gateway answers it: routed by the same rule, errors from the error
    table, the body as a WSGI server sends it (none for a 304)."""
    incoming = request(path, headers)
    try:
        _, values = ROUTES.bind_to_environ(incoming.environ).match()
        response = static_response(incoming, values["name"])
    except HTTPException:
        response = error_response(RouteNotFound("No such resource.", {"path": incoming.path}))
    except RouteNotFound as exc:
        response = error_response(exc)
    served = response.get_app_iter(incoming.environ)
    try:
        return Response(b"".join(served), status=response.status, headers=response.headers)
    finally:
        getattr(served, "close", lambda: None)()


def body(response: Response) -> bytes:
    return response.get_data()


# --- static files ----------------------------------------------------------------------------


def test_the_static_route_is_public_and_documents_its_errors():
    assert STATIC_ROUTE.scope == PUBLIC
    assert STATIC_ROUTE.errors == (RouteNotFound,)


def test_a_vendored_file_is_served_and_cached_for_a_year():
    response = get(f"/static/{REDOC}")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert response.cache_control.public and response.cache_control.immutable
    assert response.cache_control.max_age == 365 * 24 * 3600
    assert response.headers["ETag"] and response.headers["X-Content-Type-Options"] == "nosniff"
    assert body(response) == REDOC_JS.read_bytes()


def test_other_files_are_revalidated():
    response = get(f"/static/{CSS}")

    assert response.status_code == 200
    assert response.headers["Content-Type"] == "text/css; charset=utf-8"
    assert response.cache_control.no_cache and response.cache_control.max_age is None
    assert not response.cache_control.immutable
    assert response.headers["ETag"]


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("vendor/README.md", "text/markdown; charset=utf-8"), ("vendor/redoc-2.5.4/LICENSE", "application/octet-stream")],
)
def test_content_types_come_from_the_suffix(name, content_type):
    assert get(f"/static/{name}").headers["Content-Type"] == content_type


@pytest.mark.parametrize("path", [f"/static/{REDOC}", f"/static/{CSS}"])
def test_a_current_etag_is_answered_304_without_a_body(path):
    etag = get(path).headers["ETag"]
    for if_none_match in (etag, f'"other", {etag}', f"W/{etag}", "*"):
        response = get(path, {"If-None-Match": if_none_match})
        assert response.status_code == 304, if_none_match
        assert body(response) == b""
        assert response.headers["ETag"] == etag


def test_a_stale_etag_gets_the_file():
    response = get(f"/static/{CSS}", {"If-None-Match": '"stale"'})
    assert response.status_code == 200 and body(response) == (STATIC / CSS).read_bytes()


def test_a_range_is_ignored_the_whole_file_is_sent():
    for requested in ("bytes=0-9", "bytes=999999999-"):  # a part, and a range past the end (416 otherwise)
        response = get(f"/static/{CSS}", {"Range": requested})
        assert response.status_code == 200 and "Accept-Ranges" not in response.headers
        assert body(response) == (STATIC / CSS).read_bytes()


@pytest.mark.parametrize(
    "path",
    [
        "/static/../service.py",
        "/static/..",
        "/static/vendor/../../openapi.py",
        "/static/%2e%2e/service.py",
        "/static/%2E%2E/%2E%2E/config.yaml",
        "/static/..%2fservice.py",
        "/static/vendor/%2e%2e/%2e%2e/service.py",
        "/static//etc/passwd",
        "/static/%2fetc/passwd",
        f"/static/{STATIC}/{CSS}",  # absolute, even inside the directory
        "/static/vendor/README.md%00",
        "/static/%00",
        "/static/vendor/README.md%00.png",
        "/static/vendor",
        "/static/vendor/",
        "/static/",
        "/static/nothing-here.js",
        "/static/vendor\\..\\..\\service.py",
    ],
)
def test_anything_missing_or_outside_is_a_json_404(path):
    response = get(path)

    assert response.status_code == 404, path
    assert response.mimetype == "application/json"
    assert json.loads(body(response))["error"] == "NOT_FOUND"


def test_the_files_around_the_static_directory_exist():
    """The refusals above are about the path, not about missing files."""
    assert (STATIC.parent / "service.py").is_file() and (ROOT / "config.yaml").is_file()
    assert get(f"/static/vendor/../{CSS}").status_code == 200  # inside, after all


# --- pages ------------------------------------------------------------------------------------


def test_the_redoc_page_loads_the_vendored_bundle_and_nothing_else():
    response = DocsRoutes().docs(request("/docs"))
    html = body(response).decode()

    assert response.status_code == 200 and response.mimetype == "text/html"
    assert '<redoc spec-url="openapi.json"></redoc>' in html
    assert f'<script src="static/{REDOC}"></script>' in html
    assert REDOC_JS.is_file() and "2.5.4" in REDOC
    assert re.findall(r'(?:src|href)="([^"]+)"', html) == ["openapi.json", "docs/messaging", f"static/{REDOC}"]
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self';" in policy and "img-src 'self' data:;" in policy and "default-src 'none'" in policy


def test_asyncapi_json_is_the_document():
    response = DocsRoutes().asyncapi(request("/asyncapi.json"))
    assert response.mimetype == "application/json"
    assert json.loads(response.get_data()) == json.loads(json.dumps(build_asyncapi()))


@pytest.fixture(scope="module")
def page() -> str:
    response = DocsRoutes().messaging_docs(request("/docs/messaging"))
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'; style-src 'self'")
    return body(response).decode()


def test_the_messaging_page_shows_every_event_with_its_routing(page):
    for source, event_type in schemas.EVENTS:
        assert f'id="event-{source}.{event_type}"' in page
        assert f"<code>{source}.events</code> (topic, durable)" in page
        assert f"<td><code>{event_type}</code></td>" in page
    for sub in SUBSCRIPTIONS:
        assert f"<code>{sub.service}.{sub.handler}</code>" in page
        assert f"<code>{sub.queue_name}</code>" in page


def test_the_messaging_page_shows_payload_fields(page):
    section = page[page.index('id="schema-StudentStatusChanges"') :]
    assert '<a href="#schema-StudentStatusChanged">StudentStatusChanged</a>' in section
    change = page[page.index('id="schema-StudentStatusChanged"') :]
    assert "<code>to_status</code> <span" in change and "required" in change
    assert "one of &#34;enrolled&#34;, &#34;active&#34;" in change


def test_the_messaging_page_shows_every_rpc_method(page):
    document = build_asyncapi()
    methods = [key for key, operation in document["operations"].items() if "reply" in operation]
    assert len(methods) > 30
    for key in methods:
        assert f'<tr id="rpc-{key}">' in page
    assert "<code>rpc-status</code> (durable, bound with <code>status.*</code>)" in page
    assert "<code>job_id</code>: string <span" in page
    get_job = page[page.index('<tr id="rpc-status.get_job">') :]
    assert get_job[: get_job.index("</tr>")].count("<td>object</td>") == 1  # what it returns, not "or null"
    discard_job = page[page.index('<tr id="rpc-status.discard_job">') :]
    assert "<td>null</td>" in discard_job[: discard_job.index("</tr>")]


def test_the_messaging_page_links_to_what_it_names(page):
    anchors = set(re.findall(r' id="([^"]+)"', page))
    for href in re.findall(r'href="#([^"]+)"', page):
        assert href in anchors, href
    assert re.findall(r'href="([^#][^"]*)"', page) == ["../static/docs/messaging.css", "../asyncapi.json", "../docs"]


def test_the_messaging_page_escapes_everything():
    document = copy.deepcopy(build_asyncapi.__wrapped__())
    evil = '<script>alert("x")</script>'
    document["info"]["title"] = evil
    document["info"]["description"] = f"{evil} and <b>raw</b> [link](javascript:alert(1))"
    student = document["components"]["schemas"]["Student"]
    student["properties"][evil] = {"type": "string", "enum": [evil], "pattern": evil, "description": evil}
    student["description"] = evil
    html = messaging_page(document, {"asyncapi": evil, "openapi_docs": "../docs", "stylesheet": "s.css"})

    assert "<script" not in html and "<b>raw" not in html and 'href="javascript' not in html
    assert "&lt;script&gt;" in html


@pytest.mark.parametrize(
    ("binding", "routing", "matches"),
    [
        ("status.*", "status.get_job", True),
        ("status.*", "status.x.y", False),
        ("status.*", "students.get_student", False),
        ("student_created", "student_created", True),
        ("student_created", "student_created_x", False),
        ("#", "a.b.c", True),
        ("a.#", "a.b.c", True),
        ("a.b", "a-b", False),
    ],
)
def test_topic_matches(binding, routing, matches):
    assert topic_matches(binding, routing) is matches


# --- the record of what is vendored -----------------------------------------------------------


def vendored_files() -> list[Path]:
    places = [STATIC / "vendor", ROOT / "tests" / "vendor"]
    return sorted(p for place in places for p in place.rglob("*") if p.is_file() and p.name != "README.md")


def test_every_vendored_file_is_recorded_with_its_hash():
    readme = (STATIC / "vendor" / "README.md").read_text()
    files = vendored_files()
    assert len(files) >= 6
    for path in files:
        if path.name in ("LICENSE", "NOTICE"):
            assert path.name in readme, path
            continue
        name = path.relative_to(STATIC / "vendor" if path.is_relative_to(STATIC) else ROOT)
        row = next((line for line in readme.splitlines() if line.startswith(f"| `{name}`")), None)
        assert row is not None, f"{name} is not in gateway/static/vendor/README.md"
        assert hashlib.sha256(path.read_bytes()).hexdigest() in row, f"{name}: its sha256 changed"


def test_each_vendored_directory_holds_its_licence():
    for directory in {path.parent for path in vendored_files()}:
        assert (directory / "LICENSE").is_file(), directory
