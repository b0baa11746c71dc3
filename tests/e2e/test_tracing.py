"""Traces across processes: with ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, every process exports its
spans over OTLP/HTTP (here to a receiver in the test, decoding the real protobuf requests), and a
completion asked over HTTP is one trace across the gateway, status, students, certificates and
notifications processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.conftest import make_db_uris
from tests.e2e.support import System, poll, running_system

CALLER_TRACE = "0af7651916cd43dd8448eb211c80319c"
CALLER_SPAN = "b7ad6b7169203331"
SERVICES = ("gateway", "students", "status", "certificates", "notifications")


@dataclass(frozen=True)
class ReceivedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str


class Receiver(ThreadingHTTPServer):
    """An OTLP/HTTP trace receiver: ``POST /v1/traces`` with an ``ExportTraceServiceRequest``."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ReceiverHandler)
        self.spans: list[ReceivedSpan] = []
        self.content_types: set[str] = set()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class ReceiverHandler(BaseHTTPRequestHandler):
    server: Receiver

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path != "/v1/traces":
            self.send_response(404)
            self.end_headers()
            return
        self.server.content_types.add(self.headers["Content-Type"])
        request = ExportTraceServiceRequest.FromString(body)
        for resource_spans in request.resource_spans:
            attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    self.server.spans.append(
                        ReceivedSpan(
                            service=attributes.get("service.name", ""),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                        )
                    )
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def traced_system(request, rabbit_manager, amqp_uri, tmp_path_factory, receiver) -> Iterator[System]:
    """The whole system exporting traces to ``receiver`` (SQLite: the databases change nothing here)."""
    log_dir = tmp_path_factory.mktemp("e2e-traces")
    db_uris = make_db_uris("sqlite", log_dir, request)
    with running_system(
        "sqlite",
        rabbit_manager,
        amqp_uri,
        db_uris,
        log_dir,
        OTEL_EXPORTER_OTLP_ENDPOINT=receiver.endpoint,
        OTEL_BSP_SCHEDULE_DELAY="100",  # ms: export soon after a span ends
    ) as system:
        yield system


def test_a_completion_is_one_trace_across_every_process(traced_system: System, receiver: Receiver, unique) -> None:
    system = traced_system
    student = system.create_student(unique)
    activated = system.post(f"/students/{student['id']}/status", json={"status": "active"})
    assert system.settled_request(activated.json()["request_id"])["state"] == "applied"

    response = system.post(
        f"/students/{student['id']}/completion", headers={"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"}
    )
    assert response.status_code == 202, response.text
    assert system.settled_request(response.json()["request_id"])["state"] == "applied"

    def trace() -> list[ReceivedSpan]:
        found = [s for s in receiver.spans if s.trace_id == CALLER_TRACE]
        return found if sum(s.name == "send mail" for s in found) == 2 else []

    spans = poll(trace, bool, timeout=30)
    assert receiver.content_types == {"application/x-protobuf"}
    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans)  # each span exported once
    # one tree: every parent is in the trace, but the root's, which is the caller's span
    [root] = [s for s in spans if s.parent_id not in by_id]
    assert (root.service, root.name, root.parent_id) == (
        "mensageria-gateway",
        "POST /students/{student_id}/completion",
        CALLER_SPAN,
    )
    assert {s.service for s in spans} == {f"mensageria-{service}" for service in SERVICES}

    def path_to_root(span: ReceivedSpan) -> list[str]:
        path = []
        while span is not None:
            path.append(f"{span.service.removeprefix('mensageria-')}: {span.name}")
            span = by_id.get(span.parent_id)
        return path[::-1]

    # the certificate's mail, sent by notifications, descends from the gateway's span through every hop
    [certificate_mail] = [s for s in spans if s.name == "send mail" and "certificate_issued" in path_to_root(s)[-2]]
    assert path_to_root(certificate_mail) == [
        "gateway: POST /students/{student_id}/completion",
        "gateway: publish gateway.events",
        "status: process gateway.status_change_requested",
        "status: apply status change",
        "status: publish status.events",
        "certificates: process status.student_status_changed",
        "certificates: publish certificates.events",
        "notifications: process certificates.certificate_issued",
        "notifications: send mail",
    ]
    assert "students: process status.student_status_changed" in {": ".join(path_to_root(s)[-1:]) for s in spans}
