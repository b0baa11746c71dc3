"""Traces on a real broker and real databases, with the SDK's in-memory exporter: a course
completion asked over HTTP is one trace, from the gateway's span (continuing the caller's
``traceparent``) through the status service (record, apply, publish) to the students,
certificates and notifications services and the mails, every span under the right parent."""

from __future__ import annotations

import collections

import pytest
import requests
from nameko.exceptions import RemoteError
from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy
from opentelemetry.trace import SpanKind, StatusCode

from gateway.service import GatewayService
from services.certificates import CertificatesService
from services.infra import tracing
from services.notifications import NotificationsService
from services.status import StatusService
from services.students import StudentsService
from tests.e2e.support import bearer, create_api_key, free_port
from tests.integration.conftest import settled, wait_for

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


@pytest.fixture
def system(runner_factory, config, db_uris):
    port = free_port()
    runner = runner_factory(
        {**config, "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}"},
        GatewayService,
        StudentsService,
        StatusService,
        CertificatesService,
        NotificationsService,
    )
    runner.start()
    _, key = create_api_key(db_uris, "tracing-test", ["admin"])
    return f"http://127.0.0.1:{port}", bearer(key)


def one(found: list, what: str):
    assert len(found) == 1, f"expected one {what}, found {[s.name for s in found]}"
    return found[0]


def test_a_completion_is_one_trace_from_the_http_request_to_the_mails(config, system, spans, unique):
    base, auth = system
    with ClusterRpcProxy(config, timeout=10) as rpc:
        student = rpc.students.create_student({"name": "Ana", "email": f"ana.{unique}@school.example", "course": "Q"})
        activation = rpc.status.request_status_change(student["id"], "active")
        wait_for(lambda: settled(rpc, activation["request_id"]))

        response = requests.post(
            f"{base}/students/{student['id']}/completion",
            headers={**auth, "traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01"},
            timeout=10,
        )
        assert response.status_code == 202, response.text
        assert wait_for(lambda: settled(rpc, response.json()["request_id"]))["state"] == "applied"

    def in_trace() -> list:
        found = [s for s in spans.get_finished_spans() if f"{s.context.trace_id:032x}" == CALLER_TRACE]
        return found if sum(s.name == "send mail" for s in found) == 2 else []

    trace = wait_for(in_trace, timeout=30)
    by_id = {s.context.span_id: s for s in trace}
    names = collections.Counter(s.name for s in trace)

    def named(name: str, kind: SpanKind | None = None, **attributes) -> list:
        return [
            s
            for s in trace
            if s.name == name
            and (kind is None or s.kind == kind)
            and all(s.attributes.get(k) == v for k, v in attributes.items())
        ]

    def children(parent, name: str, kind: SpanKind | None = None, **attributes) -> list:
        return [s for s in named(name, kind, **attributes) if s.parent and s.parent.span_id == parent.context.span_id]

    # every span's parent is in the trace, but the root's: the caller's span
    for span in trace:
        assert span.parent is not None, span.name
        assert span.parent.span_id in by_id or f"{span.parent.span_id:016x}" == CALLER_SPAN, span.name
    http = one(named("POST /students/{student_id}/completion", SpanKind.SERVER), "HTTP span")
    assert f"{http.parent.span_id:016x}" == CALLER_SPAN and http.parent.is_remote
    assert http.attributes["http.response.status_code"] == 202
    assert http.attributes["mensageria.correlation_id"] == response.headers["X-Request-Id"]

    # gateway: the student looked up over RPC (client and server), the request published
    lookup = one(children(http, "students/get_student", SpanKind.CLIENT), "gateway's RPC call")
    one(children(lookup, "students/get_student", SpanKind.SERVER), "students' RPC worker")
    publish = one(children(http, "publish gateway.events", SpanKind.PRODUCER), "gateway's publish")

    # status: handles the message, applies the request, publishes the change from its outbox
    handle = one(children(publish, "process gateway.status_change_requested", SpanKind.CONSUMER), "status' handling")
    assert handle.attributes["messaging.consumer.group.name"] == "status"
    apply = one(children(handle, "apply status change"), "status' apply")
    assert apply.attributes["mensageria.status_request.state"] == "applied"
    changed = one(children(apply, "publish status.events", SpanKind.PRODUCER), "status' outbox publish")
    assert changed.attributes["messaging.rabbitmq.destination.routing_key"] == "student_status_changed"

    # each subscriber handles the change under that publish
    process = "process status.student_status_changed"
    consumers = {
        service: one(
            children(changed, process, SpanKind.CONSUMER, **{"messaging.consumer.group.name": service}), process
        )
        for service in ("students", "certificates", "notifications")
    }
    # certificates: asks students for the message's students, issues, publishes certificate_issued
    certify = consumers["certificates"]
    one(children(certify, "students/get_students", SpanKind.CLIENT), "certificates' RPC call")
    issued = one(children(certify, "publish certificates.events", SpanKind.PRODUCER), "certificates' outbox publish")
    mailing = one(children(issued, "process certificates.certificate_issued", SpanKind.CONSUMER), "certificate mail")
    one(children(mailing, "certificates/get_certificate_files", SpanKind.CLIENT), "the PDF fetched")

    # notifications: a mail for the change and one with the certificate, each sent under its cause
    for cause, kind in ((consumers["notifications"], "student_status_changed"), (mailing, "certificate_issued")):
        sent = one(children(cause, "send mail", SpanKind.CLIENT), f"{kind} mail")
        assert sent.attributes["mensageria.mail.kind"] == kind
        assert sent.status.status_code != StatusCode.ERROR

    assert names["send mail"] == 2 and all(s.status.status_code != StatusCode.ERROR for s in trace), names


def test_requests_accepted_together_keep_a_trace_each(config, runner_factory, spans, unique):
    """Requests that travel in one message (the gateway's group commit) are each continued in
    their own trace: recorded under a span of that trace linked to the message's, applied as its
    child, and their changes handled by the students service in the same trace."""
    runner = runner_factory(config, StudentsService, StatusService)
    runner.start()
    traces = [f"{n:032x}" for n in (0xA1, 0xA2, 0xA3)]
    with ClusterRpcProxy(config, timeout=10) as rpc:
        student = rpc.students.create_student({"name": "Bia", "email": f"bia.{unique}@school.example", "course": "Q"})
        with tracing.span("the test's publish", tracing.PRODUCER) as message_span:
            requests_ = [
                {
                    "request_id": f"00000000-0000-4000-8000-{unique[:4]}{n:08d}",
                    "student_id": student["id"],
                    "status": status,
                    "traceparent": f"00-{trace_id}-{n:016x}-01",
                }
                for n, (trace_id, status) in enumerate(zip(traces, ("active", "suspended", "active"), strict=True), 1)
            ]
            publish_batch(config, requests_, tracing.amqp_headers(message_span))
        for request in requests_:
            assert wait_for(lambda r=request: settled(rpc, r["request_id"]))["state"] == "applied"

    def handled_by_students(trace_id: str) -> list:
        return [
            s
            for s in spans.get_finished_spans()
            if f"{s.context.trace_id:032x}" == trace_id
            and (
                s.name == "handle status.student_status_changed"
                or s.attributes.get("messaging.consumer.group.name") == "students"
            )
        ]

    for trace_id in traces:
        wait_for(lambda t=trace_id: handled_by_students(t))
    finished = spans.get_finished_spans()
    message = one(
        [s for s in finished if s.parent and s.parent.span_id == message_span.get_span_context().span_id],
        "the message's processing",
    )
    assert message.name == "process gateway.status_change_requested"
    for n, trace_id in enumerate(traces, 1):
        mine = [s for s in finished if f"{s.context.trace_id:032x}" == trace_id]
        record = one([s for s in mine if s.name == "record status change"], "record span")
        assert f"{record.parent.span_id:016x}" == f"{n:016x}"  # the request's own span, from the payload
        assert [link.context.span_id for link in record.links] == [message.context.span_id]
        apply = one([s for s in mine if s.name == "apply status change"], "apply span")
        assert apply.parent.span_id == record.context.span_id
        # the change is handled in this trace: under its own publish, or (a batch-mate of another
        # trace's change, which the message's header names) in a span of its own under the apply
        [students] = handled_by_students(trace_id)
        if students.name == "handle status.student_status_changed":
            assert students.parent.span_id == apply.context.span_id and len(students.links) == 1
        else:
            publish = one([s for s in mine if s.name == "publish status.events"], "outbox publish")
            assert (publish.parent.span_id, students.parent.span_id) == (apply.context.span_id, publish.context.span_id)


def publish_batch(config: dict, requests_: list[dict], headers: dict) -> None:
    from nameko.amqp.publish import Publisher

    from services.infra.topology import declarations

    exchange = declarations("gateway", config)[0]
    Publisher(config["AMQP_URI"]).publish(
        {"requests": requests_},
        exchange=exchange,
        routing_key="status_change_requested",
        extra_headers=headers,
        serializer="json",
    )


def test_a_failed_call_is_an_error_where_it_failed_and_a_4xx_answer_is_not(system, spans):
    base, auth = system
    response = requests.get(f"{base}/students/1999999999", headers=auth, timeout=10)
    assert response.status_code == 404

    def spans_of_the_request() -> list:
        [http] = [s for s in spans.get_finished_spans() if s.name == "GET /students/{student_id}"] or [None]
        if http is None:
            return []
        return [s for s in spans.get_finished_spans() if s.context.trace_id == http.context.trace_id]

    found = {(s.name, s.kind): s for s in wait_for(lambda: len(spans_of_the_request()) == 3 and spans_of_the_request())}
    http = found["GET /students/{student_id}", SpanKind.SERVER]
    assert http.attributes["http.response.status_code"] == 404
    assert http.status.status_code == StatusCode.UNSET  # the client's mistake, not the server's
    # the call failed for the caller; the students service answered as designed (gRPC's conventions)
    call, answer = found["students/get_student", SpanKind.CLIENT], found["students/get_student", SpanKind.SERVER]
    assert call.status.status_code == StatusCode.ERROR and "StudentNotFound" in call.status.description
    assert answer.status.status_code == StatusCode.UNSET and answer.attributes["error.type"] == "STUDENT_NOT_FOUND"


def test_a_worker_that_crashes_is_an_error_span(runner_factory, config, spans):
    runner = runner_factory(config, Crashing)
    runner.start()
    with ClusterRpcProxy(config, timeout=10) as rpc, pytest.raises(RemoteError):
        rpc.crashing.crash()
    [span] = wait_for(lambda: [s for s in spans.get_finished_spans() if s.name == "crashing/crash"])
    assert (span.kind, span.status.status_code) == (SpanKind.SERVER, StatusCode.ERROR)
    assert "ZeroDivisionError" in span.status.description
    assert [event.name for event in span.events] == ["exception"]


class Crashing:
    name = "crashing"
    tracing = tracing.Tracing()

    @rpc
    def crash(self) -> None:
        raise ZeroDivisionError("a bug")
