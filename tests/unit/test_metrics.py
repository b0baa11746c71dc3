"""Metrics: the families and their labels (bounded: no ids), what the worker timer, the RPC
client and a publish record, the gauges read at scrape time (on real SQLite databases), and the
``/metrics`` endpoint."""

from __future__ import annotations

import contextlib
import logging
import re
import smtplib
import socket
import ssl
import uuid
from datetime import UTC, datetime, timedelta
from unittest.mock import Mock

import eventlet
import pytest
import requests
from nameko.amqp.publish import UndeliverableMessage
from nameko.events import EventHandler
from nameko.rpc import Rpc
from nameko.web.handlers import HttpRequestHandler
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy.orm import sessionmaker

from services._notifications import gauges as mail_gauges
from services._notifications.models import Notification, NotificationsBase
from services._notifications.transport import SmtpUtf8NotSupported, error_kind
from services._status import gauges as status_gauges
from services._status import repo as status_repo
from services._status.models import StatusBase, StatusJob, StatusJobError, StatusOutbox, StatusRequest
from services.exceptions import BackendTimeout, StudentNotFound
from services.infra import metrics
from services.infra.db import build_engine
from services.infra.outbox import OutboxRelay
from services.infra.rpc import TimedServiceProxy
from tests.e2e.support import free_port

# every label a family may have: each takes a handful of values fixed by the code, never an id
BOUNDED_LABELS = {
    "http_request_method",  # GET, POST, ... or _OTHER
    "http_route",  # a route template (/students/{student_id}) or "unmatched"
    "http_response_status_code",
    "rpc_service",
    "rpc_method",
    "outcome",  # ok, an error code, timeout, error; acked, retried, ...; sent, failed, ...
    "service",
    "handler",  # an event handler's method name
    "messaging_destination_name",  # an exchange: <service>.events
    "messaging_operation_name",
    "kind",
    "action",
    "reason",
    "source",
    "state",
}


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def family_values(families: list, name: str) -> dict[tuple, float]:
    """``{label values: value}`` of the family ``name`` among ``families``."""
    (family,) = [f for f in families if f.name == name]
    return {tuple(s.labels.values()): s.value for s in family.samples}


# --- families and labels ---------------------------------------------------------------------------


def test_every_family_is_prefixed_and_its_labels_are_bounded():
    assert len(metrics.DECLARED) >= 25
    for name, labels in metrics.DECLARED.items():
        assert re.fullmatch(r"mensageria_[a-z][a-z0-9_]*", name), name
        assert not name.endswith("_total"), f"{name}: prometheus_client adds _total to counters"
        assert set(labels) <= BOUNDED_LABELS, (name, set(labels) - BOUNDED_LABELS)


def test_every_declared_family_is_exported_or_read_at_scrape_time():
    exported = {family.name for family in metrics.REGISTRY.collect()}
    at_scrape = {g.name for g in vars(metrics).values() if isinstance(g, metrics.ScrapeGauge)}
    assert set(metrics.DECLARED) == {name for name in exported if name.startswith("mensageria_")} | at_scrape
    assert "process_cpu_seconds" in exported  # and the process's own: CPU, memory, GC
    exposition = generate_latest(metrics.REGISTRY).decode()
    # no *_created series (a label value may say "created": handle_student_created)
    assert re.findall(r"^\w+_created[{ ]", exposition, re.M) == []


@pytest.mark.parametrize(
    ("method", "expected"), [("GET", "GET"), ("PATCH", "PATCH"), ("BREW", "_OTHER"), ("get", "_OTHER")]
)
def test_a_made_up_http_method_is_one_label_value(method, expected):
    before = sample("mensageria_http_server_request_duration_seconds_count", **_http(expected))
    metrics.observe_http(method, "unmatched", 404, 0.001)
    assert sample("mensageria_http_server_request_duration_seconds_count", **_http(expected)) == before + 1


def _http(method: str) -> dict:
    return {"http_request_method": method, "http_route": "unmatched", "http_response_status_code": "404"}


# --- what is recorded ----------------------------------------------------------------------------


class FakeContainer:
    def __init__(self, service_name: str = "students", **config):
        self.service_name = service_name
        self.config = {"METRICS_PORT_STUDENTS": 0, **config}
        self.dependencies = []


def worker(entrypoint_type: type, method: str, service: str = "students") -> Mock:
    entrypoint = Mock(spec=entrypoint_type)
    entrypoint.method_name = method
    return Mock(entrypoint=entrypoint, service_name=service)


def provider(container: FakeContainer) -> metrics.Metrics:
    metrics_provider = metrics.Metrics().bind(container, "metrics")
    metrics_provider.setup()
    return metrics_provider


class TestWorkerTimer:
    def test_rpc_methods_by_outcome(self):
        timer = provider(FakeContainer())
        labels = {"rpc_service": "students", "rpc_method": "get_student"}
        name = "mensageria_rpc_server_call_duration_seconds_count"
        before = {o: sample(name, **labels, outcome=o) for o in ("ok", "STUDENT_NOT_FOUND", "error")}
        for exc in (None, StudentNotFound("gone"), ZeroDivisionError()):
            ctx = worker(Rpc, "get_student")
            timer.worker_setup(ctx)
            timer.worker_result(ctx, None, None if exc is None else (type(exc), exc, None))
        for outcome in before:
            assert sample(name, **labels, outcome=outcome) == before[outcome] + 1, outcome
        assert timer.started == {}

    def test_event_handlers_by_outcome(self):
        timer = provider(FakeContainer())
        labels = {"service": "students", "handler": "handle_student_status_changed", "outcome": "ok"}
        name = "mensageria_messaging_process_duration_seconds_count"
        before = sample(name, **labels)
        ctx = worker(EventHandler, "handle_student_status_changed")
        timer.worker_setup(ctx)
        timer.worker_result(ctx)
        assert sample(name, **labels) == before + 1

    def test_http_workers_are_left_to_the_gateway_entrypoint(self):
        timer = provider(FakeContainer("gateway"))
        ctx = worker(HttpRequestHandler, "health", "gateway")
        timer.worker_setup(ctx)
        assert timer.started == {}
        timer.worker_result(ctx)  # nothing to record, nothing raised

    def test_the_port_is_the_services_own_and_zero_is_off(self):
        assert provider(FakeContainer("status", METRICS_PORT_STATUS=9999)).port == 9999
        assert provider(FakeContainer("echo")).port == 0  # a service without a setting: no endpoint
        timer = provider(FakeContainer())
        timer.start()
        assert timer.endpoint is None


class SlowProxy:
    def get_student(self, student_id):
        if student_id == 0:
            eventlet.sleep(1)
        if student_id < 0:
            raise StudentNotFound("none", {"student_id": student_id})
        return {"id": student_id}


@pytest.mark.parametrize(("student_id", "outcome"), [(1, "ok"), (-1, "STUDENT_NOT_FOUND"), (0, "timeout")])
def test_rpc_calls_made_by_outcome(student_id, outcome):
    labels = {"rpc_service": "students", "rpc_method": "get_student", "outcome": outcome}
    name = "mensageria_rpc_client_call_duration_seconds_count"
    before = sample(name, **labels)
    proxy = TimedServiceProxy(SlowProxy(), "students", 0.05)
    if outcome == "ok":
        assert proxy.get_student(student_id) == {"id": 1}
    else:
        with pytest.raises(BackendTimeout if outcome == "timeout" else StudentNotFound):
            proxy.get_student(student_id)
    assert sample(name, **labels) == before + 1


@pytest.mark.parametrize(
    ("error", "outcome"), [(None, "ok"), (UndeliverableMessage(), "unroutable"), (OSError("gone"), "error")]
)
def test_a_publish_is_timed_and_counted_by_outcome(error, outcome):
    exchange = f"test-{uuid.uuid4().hex[:6]}.events"
    with pytest.raises(type(error)) if error else contextlib.nullcontext(), metrics.publishing(exchange):
        if error:
            raise error
    assert (
        sample("mensageria_messaging_client_sent_messages_total", messaging_destination_name=exchange, outcome=outcome)
        == 1
    )
    timed = {"messaging_operation_name": "publish", "messaging_destination_name": exchange}
    assert sample("mensageria_messaging_client_operation_duration_seconds_count", **timed) == 1


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (smtplib.SMTPAuthenticationError(535, b"no"), "auth"),
        (smtplib.SMTPSenderRefused(550, b"no", "a@b.c"), "sender_refused"),
        (smtplib.SMTPRecipientsRefused({"a@b.c": (550, b"no")}), "recipient_refused"),
        (smtplib.SMTPDataError(554, b"spam"), "data_refused"),
        (smtplib.SMTPConnectError(421, b"busy"), "connection"),
        (smtplib.SMTPServerDisconnected("bye"), "connection"),
        (smtplib.SMTPNotSupportedError("STARTTLS"), "tls"),
        (SmtpUtf8NotSupported("no SMTPUTF8"), "smtputf8"),
        (smtplib.SMTPHeloError(501, b"who"), "smtp"),
        (TimeoutError(), "timeout"),
        (ssl.SSLCertVerificationError("bad certificate"), "tls"),
        (ConnectionRefusedError(), "connection"),
        (socket.gaierror(-2, "Name or service not known"), "connection"),
        (OSError(113, "No route to host"), "connection"),
        (PermissionError(13, "denied"), "other"),
        (ValueError("odd"), "other"),
    ],
)
def test_smtp_errors_have_a_kind(exc, kind):
    assert error_kind(exc) == kind


# --- gauges read at scrape time ----------------------------------------------------------------------


class Gauges:
    def __init__(self, value: float = 1.0, fails: bool = False):
        self.value, self.fails, self.calls = value, fails, 0

    def collect_metrics(self):
        self.calls += 1
        if self.fails:
            raise ConnectionError("database away")
        return [metrics.STATUS_PENDING.family(self.value)]


def test_scrape_time_gauges_are_cached_and_a_failing_provider_is_left_out(caplog):
    good, bad = Gauges(7), Gauges(fails=True)
    collector = metrics.ScrapeTimeGauges(lambda: [good, bad], max_age=60)
    with caplog.at_level(logging.WARNING):
        first = collector.collect()
    assert [(f.name, f.samples[0].value) for f in first] == [("mensageria_status_pending_requests", 7)]
    assert "Gauges could not be read: database away" in caplog.text
    assert collector.collect() is first and good.calls == 1  # within max_age: the same answer
    collector.max_age = 0
    collector.collect()
    assert good.calls == 2


def test_a_scrape_gauge_family_with_and_without_labels():
    labelled = metrics.OUTBOX_PENDING.family({("students",): 3, ("status",): 0})
    assert isinstance(labelled, GaugeMetricFamily)
    assert [(s.labels, s.value) for s in labelled.samples] == [({"service": "students"}, 3), ({"service": "status"}, 0)]
    assert [(s.labels, s.value) for s in metrics.STATUS_PENDING.family(12).samples] == [({}, 12)]


def session_factory(tmp_path, name: str, base) -> sessionmaker:
    engine = build_engine(f"sqlite:///{tmp_path}/{name}.db")
    base.metadata.create_all(engine)
    return sessionmaker(bind=engine, expire_on_commit=False)


def ago(seconds: float) -> datetime:
    return datetime.now(UTC) - timedelta(seconds=seconds)


def request_row(seq: int, state: str, created: datetime, job_id: str | None = None) -> StatusRequest:
    return StatusRequest(
        seq=seq,
        id=str(uuid.uuid4()),
        student_id=seq,
        target_status="active",
        state=state,
        error_code="INVALID_TRANSITION" if state == "rejected" else None,  # as every rejection has one
        job_id=job_id,
        row_no=seq if job_id else None,
        created_at=created,
        updated_at=created,
    )


def test_status_gauges_count_the_backlog_and_the_running_jobs(tmp_path):
    db = session_factory(tmp_path, "status", StatusBase)
    with db.begin() as session:
        session.add_all(
            [
                StatusJob(id="running", upload="u1", total=4, created_at=ago(10), sealed_at=ago(9)),  # rows 4-6 and 9
                StatusJob(id="receiving", upload="u2", created_at=ago(5)),  # upload still going on
                StatusJob(id="done", upload="u3", total=1, created_at=ago(100), sealed_at=ago(99)),
                request_row(1, "applied", ago(120)),
                request_row(2, "pending", ago(60)),  # the oldest the applier may take
                request_row(3, "pending", ago(30)),
                request_row(4, "applied", ago(10), "running"),
                request_row(5, "rejected", ago(10), "running"),
                request_row(6, "pending", ago(10), "running"),
                request_row(7, "pending", ago(90), "receiving"),  # held until the seal: not backlog
                request_row(8, "applied", ago(100), "done"),
                StatusJobError(job_id="running", row_no=9, code="VALIDATION_ERROR", message="bad", details={}),
            ]
        )
        session.flush()
        status_repo.enqueue(session)  # the pending ones in the applier's queue, as recording puts them
        session.add(StatusOutbox(event_type="student_status_changed", payload={}, created_at=ago(4)))
        session.add(StatusOutbox(event_type="student_status_changed", payload={}, created_at=ago(2)))
    families = status_gauges.read(db)
    assert family_values(families, "mensageria_status_pending_requests") == {(): 3}
    assert family_values(families, "mensageria_status_oldest_pending_age_seconds")[()] == pytest.approx(60, abs=5)
    assert family_values(families, "mensageria_status_running_jobs") == {(): 1}
    rows = family_values(families, "mensageria_status_job_rows")
    assert rows == {("pending",): 1, ("applied",): 1, ("rejected",): 2, ("failed",): 0}
    # 3 rows settled (one applied, one rejected, one refused) in the job's ~10 s
    assert family_values(families, "mensageria_status_job_rows_per_second")[()] == pytest.approx(0.3, abs=0.05)

    relay = OutboxRelay(db, StatusOutbox, {"AMQP_URI": "amqp://guest:guest@127.0.0.1:1/"}, "status")
    outbox = relay.gauges("status")
    assert family_values(outbox, "mensageria_outbox_pending_rows") == {("status",): 2}
    assert family_values(outbox, "mensageria_outbox_oldest_pending_age_seconds")[("status",)] == pytest.approx(4, abs=2)
    db.kw["bind"].dispose()


def test_empty_databases_read_as_zeros(tmp_path):
    status = session_factory(tmp_path, "status", StatusBase)
    values = {f.name: family_values([f], f.name) for f in status_gauges.read(status)}
    assert values["mensageria_status_pending_requests"] == {(): 0}
    assert values["mensageria_status_oldest_pending_age_seconds"] == {(): 0}
    assert values["mensageria_status_running_jobs"] == {(): 0}
    assert set(values["mensageria_status_job_rows"].values()) == {0}
    mail = session_factory(tmp_path, "notifications", NotificationsBase)
    assert family_values(mail_gauges.read(mail), "mensageria_mail_notifications") == {("pending",): 0, ("failed",): 0}
    for factory in (status, mail):
        factory.kw["bind"].dispose()


def notification(n: int, state: str, created: datetime) -> Notification:
    return Notification(
        dedup_key=f"k{n}",
        kind="student_status_changed",
        student_id=n,
        recipient=f"s{n}@example.org",
        subject="s",
        body_text="t",
        body_html="h",
        message_id=f"<{n}@example.org>",
        state=state,
        attempts=0,
        next_attempt_at=created,
        created_at=created,
        updated_at=created,
    )


def test_mail_gauges_count_pending_and_failed_mails(tmp_path):
    db = session_factory(tmp_path, "notifications", NotificationsBase)
    with db.begin() as session:
        states = ["sent", "sent", "pending", "pending", "failed"]
        session.add_all([notification(n, state, ago(100 - n * 10)) for n, state in enumerate(states)])
    families = mail_gauges.read(db)
    assert family_values(families, "mensageria_mail_notifications") == {("pending",): 2, ("failed",): 1}
    assert family_values(families, "mensageria_mail_oldest_pending_age_seconds")[()] == pytest.approx(80, abs=5)
    db.kw["bind"].dispose()


# --- the endpoint --------------------------------------------------------------------------------------


def test_the_endpoint_serves_the_registry_and_its_providers_gauges():
    container = FakeContainer(METRICS_PORT_STUDENTS=free_port())
    container.dependencies = [Gauges(5)]
    served = provider(container)
    served.start()
    try:
        response = requests.get(f"http://127.0.0.1:{served.port}/metrics", timeout=5)
    finally:
        served.stop()
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    assert "# TYPE mensageria_http_server_request_duration_seconds histogram" in response.text
    assert "mensageria_status_pending_requests 5.0" in response.text
    with pytest.raises(requests.ConnectionError):  # stopped: the port is closed
        requests.get(f"http://127.0.0.1:{served.port}/metrics", timeout=5)


def test_a_taken_port_is_one_error_line_and_the_service_runs_on(caplog):
    first = metrics.MetricsEndpoint(free_port(), CollectorRegistry())
    assert first.start()
    try:  # as another process's endpoint on the same port would
        second = metrics.MetricsEndpoint(first.port, CollectorRegistry())
        with caplog.at_level(logging.ERROR):
            assert second.start() is False
        second.stop()
    finally:
        first.stop()
    assert f"metrics: cannot listen on port {first.port}" in caplog.text
