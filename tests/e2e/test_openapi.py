"""The gateway describes itself."""

from __future__ import annotations

from tests.e2e.support import System

PATHS = {
    "/students": {"get", "post"},
    "/students/{student_id}": {"get", "patch", "delete"},
    "/students/{student_id}/status": {"post"},
    "/students/{student_id}/history": {"get"},
    "/status-requests/{request_id}": {"get"},
    "/health": {"get"},
    "/ready": {"get"},
}


def test_openapi_document_lists_every_route(system: System) -> None:
    response = system.get("/openapi.json")
    assert response.status_code == 200, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    for path, methods in PATHS.items():
        assert path in spec["paths"], sorted(spec["paths"])
        assert methods <= set(spec["paths"][path]), (path, sorted(spec["paths"][path]))
