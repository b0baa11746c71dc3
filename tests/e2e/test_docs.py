"""The documentation, served by the running gateway without a key: the Redoc page and the bundle
it loads, the AsyncAPI document and its page, and no file outside gateway/static/."""

from __future__ import annotations

import http.client
import json
import re
from urllib.parse import urljoin, urlparse

import pytest
import requests

from gateway.routes.docs import REDOC, STATIC
from services import schemas
from services.infra.topology import SUBSCRIPTIONS
from tests.e2e.support import HTTP_TIMEOUT, System


def anonymous(system: System, path: str, **kwargs) -> requests.Response:
    """``GET path`` without an API key (``system.http`` sends the tests' admin key)."""
    response = requests.get(system.base_url + path, timeout=HTTP_TIMEOUT, **kwargs)
    assert "Traceback" not in response.text
    return response


def raw_get(system: System, path: str) -> tuple[int, str, bytes]:
    """``GET path`` exactly as written: no client normalises ``..`` or re-encodes anything."""
    address = urlparse(system.base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=HTTP_TIMEOUT)
    try:
        connection.putrequest("GET", path, skip_accept_encoding=True)
        connection.endheaders()
        response = connection.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read()
    finally:
        connection.close()


def test_the_redoc_page_and_its_bundle(system: System):
    page = anonymous(system, "/docs")
    assert page.status_code == 200, page.text
    assert page.headers["Content-Type"] == "text/html; charset=utf-8"
    assert '<redoc spec-url="openapi.json">' in page.text
    (script,) = re.findall(r'<script src="([^"]+)">', page.text)
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]

    bundle = anonymous(system, urlparse(urljoin(system.base_url + "/docs", script)).path)
    assert bundle.status_code == 200
    assert bundle.headers["Content-Type"] == "text/javascript; charset=utf-8"
    assert "immutable" in bundle.headers["Cache-Control"] and "max-age=31536000" in bundle.headers["Cache-Control"]
    assert bundle.content == (STATIC / REDOC).read_bytes()
    assert '"2.5.4"' in bundle.text and "For license information" in bundle.text[:200]

    again = anonymous(system, urlparse(bundle.url).path, headers={"If-None-Match": bundle.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""

    spec = anonymous(system, "/openapi.json").json()  # what the page renders
    for path in ("/docs", "/docs/messaging", "/asyncapi.json", "/static/{name}"):
        assert spec["paths"][path]["get"]["security"] == [], path


def test_the_asyncapi_document(system: System):
    response = anonymous(system, "/asyncapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/json"
    document = response.json()
    assert document["asyncapi"] == "3.0.0"
    assert {"students.create_student", "status.request_status_change", "certificates.get_certificate"} <= set(
        document["operations"]
    )
    for source, event_type in schemas.EVENTS:
        assert document["channels"][f"event.{source}.{event_type}"]["address"] == event_type
    for sub in SUBSCRIPTIONS:
        assert f"queue.{sub.queue_name}" in document["channels"]


def test_the_messaging_page(system: System):
    response = anonymous(system, "/docs/messaging")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.text
    assert "<h3>status.student_status_changed</h3>" in page
    assert "<code>status.events</code> (topic, durable)" in page
    assert "<code>evt-status-student_status_changed--certificates.handle_student_status_changed</code>" in page
    assert '<tr id="rpc-students.create_student">' in page
    assert "<script" not in page

    (stylesheet,) = re.findall(r'<link rel="stylesheet" href="([^"]+)">', page)
    css = anonymous(system, urlparse(urljoin(system.base_url + "/docs/messaging", stylesheet)).path)
    assert css.status_code == 200 and css.headers["Content-Type"] == "text/css; charset=utf-8"
    assert css.headers["Cache-Control"] == "no-cache" and css.headers["ETag"]


@pytest.mark.parametrize(
    "path",
    [
        "/static/../service.py",
        "/static/%2e%2e/service.py",
        "/static/%2E%2E/%2E%2E/config.yaml",
        "/static/vendor/..%2f..%2fservice.py",
        "/static//etc/passwd",
        "/static/%2fetc/passwd",
        "/static/vendor/README.md%00",
        "/static/nothing-here.js",
    ],
)
def test_nothing_outside_the_static_directory(system: System, path):
    status, content_type, body = raw_get(system, path)
    assert status == 404, (path, body[:200])
    assert content_type == "application/json"
    assert json.loads(body)["error"] == "NOT_FOUND"
