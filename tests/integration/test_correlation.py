"""The correlation id across the services on a real broker: an RPC caller's id reaches the
stored request, the outbox rows and the events they publish (as the header
``nameko.correlation_id`` and, per change, in the payload), the certificate and the mail."""

from __future__ import annotations

import email
import email.policy
from pathlib import Path

import pytest
from nameko.events import event_handler
from nameko.extensions import DependencyProvider
from nameko.rpc import rpc
from nameko.standalone.rpc import ClusterRpcProxy
from nameko.testing.utils import get_container

from services.certificates import CertificatesService
from services.infra import correlation
from services.infra.correlation import Correlation
from services.infra.rpc import TimedRpcProxy
from services.notifications import NotificationsService
from services.status import StatusService
from services.students import StudentsService
from tests.integration.conftest import settled, wait_for

SEEN: list[tuple[str, str | None, dict]] = []  # (event, the header's correlation id, payload)


class WorkerContext(DependencyProvider):
    def get_dependency(self, worker_ctx):
        return worker_ctx


class CorrelationRecorder:
    """Records each event with the correlation id its worker runs under (the message's header)."""

    name = "correlation_recorder"
    context = WorkerContext()

    def record(self, event: str, payload: dict) -> None:
        SEEN.append((event, self.context.data.get("correlation_id"), payload))

    @event_handler("students", "student_created")
    def handle_student_created(self, payload: dict) -> None:
        self.record("student_created", payload)

    @event_handler("status", "student_status_changed")
    def handle_student_status_changed(self, payload: dict) -> None:
        self.record("student_status_changed", payload)

    @event_handler("certificates", "certificate_issued")
    def handle_certificate_issued(self, payload: dict) -> None:
        self.record("certificate_issued", payload)


@pytest.fixture
def system(runner_factory, config):
    SEEN.clear()
    runner = runner_factory(
        config, CorrelationRecorder, StudentsService, StatusService, CertificatesService, NotificationsService
    )
    runner.start()
    return runner


def caller(config: dict, correlation_id: str) -> ClusterRpcProxy:
    """A standalone proxy whose calls carry ``correlation_id`` (as nameko context data)."""
    return ClusterRpcProxy(config, timeout=10, context_data={"correlation_id": correlation_id})


def seen(event: str) -> list[tuple[str | None, dict]]:
    return [(header, payload) for name, header, payload in SEEN if name == event]


def test_one_id_from_the_rpc_caller_to_the_mail(config, system, unique):
    enrol, activate, complete = (f"corr-{step}-{unique}" for step in ("enrol", "activate", "complete"))
    with caller(config, enrol) as rpc:
        student = rpc.students.create_student(
            {"name": "Ana", "email": f"ana.{unique}@school.example", "course": "Física"}
        )
    # the students' outbox row was published with the caller's id
    [(header, payload)] = wait_for(lambda: seen("student_created"))
    assert (header, payload["student"]["id"]) == (enrol, student["id"])

    requests = []
    for correlation_id, target in ((activate, "active"), (complete, "completed")):
        with caller(config, correlation_id) as rpc:
            requests.append(rpc.status.request_status_change(student["id"], target))
            assert requests[-1]["correlation_id"] == correlation_id  # recorded with the caller's id
            assert wait_for(lambda rid=requests[-1]["request_id"]: settled(rpc, rid))["state"] == "applied"

    with ClusterRpcProxy(config, timeout=10) as rpc:
        assert [rpc.status.get_status_request(r["request_id"])["correlation_id"] for r in requests] == [
            activate,
            complete,
        ]
        # each change in the payload keeps its own id; the message's header is its first change's
        changes = wait_for(
            lambda: len(both := [c for _, p in seen("student_status_changed") for c in p["changes"]]) >= 2 and both[:2]
        )
        assert [c["correlation_id"] for c in changes] == [activate, complete]
        for header, payload in seen("student_status_changed"):
            assert header == payload["changes"][0]["correlation_id"]

        # the certificate, its event and its mail carry the completion's id
        [certificate] = wait_for(lambda: rpc.certificates.list_certificates(student["id"]))
        assert certificate["correlation_id"] == complete
        assert "correlation_id" not in rpc.certificates.get_certificate(certificate["code"])  # the public view
        [(header, issued)] = wait_for(lambda: seen("certificate_issued"))
        assert (header, issued["correlation_id"], issued["code"]) == (complete, complete, certificate["code"])

        def sent() -> list[dict]:
            items = rpc.notifications.list_notifications(student_id=student["id"], state="sent")["items"]
            return items if len(items) == 3 else []

        notifications = wait_for(sent, timeout=30)
    assert sorted((n["kind"], n["correlation_id"]) for n in notifications) == [
        ("certificate_issued", complete),
        ("student_status_changed", activate),
        ("student_status_changed", complete),
    ]
    mails = [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        for path in Path(config["MAIL_DIR"]).glob("*.eml")
    ]
    assert sorted(m["X-Correlation-ID"] for m in mails if student["email"] in m["To"]) == sorted(
        [activate, complete, complete]
    )


def test_a_request_without_a_caller_s_id_gets_one_and_keeps_it(config, system, unique):
    with ClusterRpcProxy(config, timeout=10) as rpc:  # no correlation id: the service makes one
        student = rpc.students.create_student({"name": "Bia", "email": f"bia.{unique}@school.example", "course": "c"})
        request = rpc.status.request_status_change(student["id"], "active")
        explicit = rpc.status.request_status_change(student["id"], "withdrawn", correlation_id=f"own-{unique}")

        assert request["correlation_id"] and request["correlation_id"] != explicit["correlation_id"]
        assert explicit["correlation_id"] == f"own-{unique}"
        wait_for(lambda: settled(rpc, explicit["request_id"]))
    changes = wait_for(
        lambda: len(both := [c for _, p in seen("student_status_changed") for c in p["changes"]]) >= 2 and both[:2]
    )
    assert [c["correlation_id"] for c in changes] == [request["correlation_id"], f"own-{unique}"]


class Echo:
    name = "echo"
    correlation = Correlation()

    @rpc
    def whoami(self) -> str | None:
        return correlation.current()


class Caller:
    """Calls ``echo`` from a worker, from inside ``working_on`` and from a background loop's proxy."""

    name = "caller"
    correlation = Correlation()
    echo = TimedRpcProxy("echo")

    @rpc
    def ask(self, under: str | None = None) -> list:
        answers = [self.echo.whoami()]
        if under:
            with correlation.working_on(under):
                answers.append(self.echo.whoami())
            answers.append(self.echo.whoami())  # the worker's own again
        return answers


def test_calls_made_while_working_on_another_id_carry_it(runner_factory, config):
    runner = runner_factory(config, Echo, Caller)
    runner.start()
    background = next(d for d in get_container(runner, Caller).dependencies if d.attr_name == "echo").background()

    with caller(config, "corr-worker") as rpc:
        assert rpc.caller.ask("corr-item") == ["corr-worker", "corr-item", "corr-worker"]
    with correlation.working_on("corr-loop"):
        assert background.whoami() == "corr-loop"  # a background loop's row
    assert background.whoami() not in (None, "corr-loop")  # outside any: a new one
