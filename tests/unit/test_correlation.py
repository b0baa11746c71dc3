"""The correlation id without a broker: what counts as one, ``working_on``, and each place
that stores or sends it (status requests and jobs, outbox rows, certificates, mails, the
RPC calls a service makes under another id)."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace
from unittest.mock import MagicMock

import pytest
from nameko.rpc import ServiceProxy
from nameko.testing.services import worker_factory
from sqlalchemy import select

from services._certificates import repo as certificates_repo
from services._certificates.models import Certificate, CertificatesBase
from services._notifications import mail as mails
from services._notifications import repo as notifications_repo
from services._notifications import transport
from services._notifications.models import Notification, NotificationsBase
from services._status import jobs_repo
from services._status.models import StatusBase, StatusOutbox, StatusRequest
from services._students.models import StudentsBase, StudentsOutbox
from services.exceptions import ValidationFailed
from services.infra import correlation
from services.infra.batching import Delivery
from services.infra.models import utcnow
from services.infra.outbox import OutboxRelay, OutboxWriter
from services.infra.rpc import TimedServiceProxy
from services.infra.settings import Settings
from services.status import StatusService
from tests.unit.test_notifications import CHANGE, ISSUED, MAIL_FROM, STUDENT, outgoing, parse
from tests.unit.test_services import make_session_factory


@pytest.fixture
def database(tmp_path):
    """``database(Base)``: a session factory on a fresh SQLite file with ``Base``'s tables."""
    factories = []

    def make(base):
        factories.append(make_session_factory(tmp_path, base.__name__, base))
        return factories[-1]

    yield make
    for factory in factories:
        factory.kw["bind"].dispose()


@pytest.fixture
def status_db(database):
    return database(StatusBase)


@pytest.fixture
def status(status_db):
    return worker_factory(StatusService, db=status_db, settings=Settings())


@pytest.mark.parametrize("value", ["a", "corr-1", "x" * 128, "!~", "550e8400-e29b-41d4-a716-446655440000"])
def test_sane_ids_are_kept(value):
    assert correlation.sane(value) == value


@pytest.mark.parametrize("value", ["", "x" * 129, "two words", "tab\there", "line\n", "café", None, 7, b"bytes"])
def test_insane_ids_are_refused(value):
    assert correlation.sane(value) is None


def test_working_on_sets_then_restores_the_id_and_keeps_the_entrypoint():
    assert correlation.current() is None
    with correlation.working_on("outer", "mail status_changed") as outer:
        with correlation.working_on("inner") as inner:
            assert (correlation.current(), correlation.current_entrypoint()) == ("inner", "mail status_changed")
        assert (outer, inner, correlation.current()) == ("outer", "inner", "outer")
        with correlation.working_on("not sane") as replaced:
            assert replaced != "not sane" and correlation.current() == replaced  # a new one
    assert (correlation.current(), correlation.current_entrypoint()) == (None, None)


def test_outbox_rows_take_the_id_in_hand_unless_given(database):
    students_db = database(StudentsBase)
    writer = OutboxWriter(StudentsOutbox)
    with students_db.begin() as session:
        writer.add(session, "student_created", {"n": 1})
        with correlation.working_on("corr-worker"):
            writer.add(session, "student_created", {"n": 2})
            writer.add(session, "student_created", {"n": 3}, correlation_id="corr-given")
    with students_db() as session:
        ids = session.scalars(select(StudentsOutbox.correlation_id).order_by(StudentsOutbox.id)).all()
    assert ids == [None, "corr-worker", "corr-given"]


class TestStatusRequests:
    def test_a_request_records_its_caller_s_id_or_its_own(self, status, status_db):
        with correlation.working_on("corr-caller"):
            implicit = status.request_status_change(5, "active")
            explicit = status.request_status_change(6, "active", correlation_id="corr-own")

        assert (implicit["correlation_id"], explicit["correlation_id"]) == ("corr-caller", "corr-own")
        assert status.get_status_request(explicit["request_id"])["correlation_id"] == "corr-own"

    def test_an_insane_explicit_id_is_refused(self, status, status_db):
        with pytest.raises(ValidationFailed) as info:
            status.request_status_change(5, "active", correlation_id="has spaces")
        assert set(info.value.details) == {"correlation_id"}

    def test_a_batched_event_keeps_each_request_s_id(self, status, status_db):
        commands = [
            {"request_id": f"00000000-0000-4000-8000-00000000000{n}", "student_id": n, "status": "active"}
            for n in (1, 2)
        ]
        commands[0]["correlation_id"] = "corr-first"
        message = Delivery({"requests": commands}, {correlation.KEY: "corr-message"})  # the message's header
        status.handle_status_change_requested([message])

        with status_db() as session:
            rows = session.execute(select(StatusRequest.student_id, StatusRequest.correlation_id)).all()
        assert sorted(rows) == [(1, "corr-first"), (2, "corr-message")]

    def test_a_job_s_rows_carry_the_job_s_id(self, status, status_db):
        status.applier.directory.resolve_emails.return_value = {}
        with correlation.working_on("corr-upload"):
            status.submit_job([{"student_id": 1, "status": "active"}, {"student_id": 2, "status": "active"}])
        explicit = jobs_repo.create(status_db, None, None, correlation_id="corr-job")

        with status_db() as session:
            assert session.scalars(select(StatusRequest.correlation_id)).all() == ["corr-upload"] * 2
            assert jobs_repo.progress(session, explicit.job_id, 0)["correlation_id"] == "corr-job"


def test_a_certificate_records_the_id_of_the_change_that_caused_it(database):
    db = database(CertificatesBase)
    student = {"id": 7, "name": "Ana", "email": "ana@example.org"}
    with db.begin() as session:
        certificates_repo.issue(session, student, "Physics", "r-1", "corr-completion")
    with db() as session:
        assert session.scalar(select(Certificate.correlation_id)) == "corr-completion"


class TestMail:
    def test_a_mail_takes_its_event_s_id(self):
        changed = mails.status_changed_mail({**CHANGE, "correlation_id": "c-1"}, STUDENT, MAIL_FROM, "en")
        issued = mails.certificate_issued_mail({**ISSUED, "correlation_id": "c-2"}, [], MAIL_FROM, "en")

        assert (changed.correlation_id, issued.correlation_id) == ("c-1", "c-2")
        assert mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en").correlation_id is None

    def test_the_message_carries_it_as_x_correlation_id(self):
        mail = mails.status_changed_mail(CHANGE, STUDENT, MAIL_FROM, "en")
        sent = outgoing(mail)
        with_id = SimpleNamespace(**{**sent.__dict__, "correlation_id": "corr-mail"})

        assert parse(transport.compose(with_id, MAIL_FROM).data)["X-Correlation-ID"] == "corr-mail"
        assert "X-Correlation-ID" not in parse(transport.compose(sent, MAIL_FROM).data)
        assert transport.build_message(with_id, MAIL_FROM)["X-Correlation-ID"] == "corr-mail"
        assert "X-Correlation-ID" not in transport.build_message(sent, MAIL_FROM)

    def test_the_log_records_the_mail_s_id_or_the_one_in_hand_and_the_sender_reads_it(self, database):
        db = database(NotificationsBase)
        own = mails.status_changed_mail({**CHANGE, "correlation_id": "corr-own"}, STUDENT, MAIL_FROM, "en")
        other = mails.status_changed_mail({**CHANGE, "request_id": "r-2"}, STUDENT, MAIL_FROM, "en")
        with correlation.working_on("corr-handler"):
            assert notifications_repo.record_many(db, [own, other]) == 2

        with db.begin() as session:
            claimed = notifications_repo.claim_due(session, utcnow(), 10, timedelta(seconds=60))
            stored = session.scalars(select(Notification.correlation_id).order_by(Notification.id)).all()
        assert stored == ["corr-own", "corr-handler"]
        assert [(m.kind, m.correlation_id) for m in claimed] == [
            (mails.STATUS_CHANGED, "corr-own"),
            (mails.STATUS_CHANGED, "corr-handler"),
        ]


class TestRpcUnderAnotherId:
    """A handler working on one item of a batch calls other services under that item's id."""

    def proxy(self, data: dict) -> tuple[TimedServiceProxy, MagicMock]:
        worker_ctx = MagicMock(data=data, context_data={**data, "call_id_stack": ["x.y.1"]})
        nameko_proxy = ServiceProxy(worker_ctx, "students", MagicMock(name="reply_listener"))
        return TimedServiceProxy(nameko_proxy, "students", 5), worker_ctx

    def published_context(self, monkeypatch, call) -> dict:
        seen = {}

        def fake_call(method_proxy, *args, **kwargs):
            seen.update(method_proxy.worker_ctx.context_data)
            return MagicMock(result=lambda: "ok")

        monkeypatch.setattr("nameko.rpc.MethodProxy._call", fake_call)
        assert call() == "ok"
        return seen

    def test_calls_carry_the_id_in_hand(self, monkeypatch):
        proxy, worker_ctx = self.proxy({"correlation_id": "corr-worker"})
        with correlation.working_on("corr-item"):
            seen = self.published_context(monkeypatch, lambda: proxy.get_student(1))
        assert seen == {"correlation_id": "corr-item", "call_id_stack": ["x.y.1"]}
        assert worker_ctx.data == {"correlation_id": "corr-worker"}  # the worker's own is untouched

    def test_a_worker_s_own_calls_are_left_alone(self, monkeypatch):
        proxy, _ = self.proxy({"correlation_id": "corr-worker"})
        seen = self.published_context(monkeypatch, lambda: proxy.get_student(1))
        assert seen["correlation_id"] == "corr-worker"


def test_outbox_rows_are_published_with_their_id_as_header(status_db):
    with status_db.begin() as session:
        session.add(StatusOutbox(event_type="student_status_changed", payload={"changes": []}, correlation_id="c-1"))
        session.add(StatusOutbox(event_type="student_status_changed", payload={"changes": []}))
    relay = OutboxRelay(status_db, StatusOutbox, {"AMQP_URI": "amqp://nowhere/"}, "status")
    relay.declared, relay.publisher = True, MagicMock()  # no broker: what would be published

    assert relay.flush() == 2

    calls = relay.publisher.publish.call_args_list
    assert [call.kwargs["extra_headers"] for call in calls] == [{"nameko.correlation_id": "c-1"}, {}]
    # the stored JSON text goes out as it is, and a published row is gone
    assert [(call.args[0], call.kwargs["content_type"]) for call in calls] == [
        ('{"changes":[]}', "application/json")
    ] * 2
    with status_db() as session:
        assert session.query(StatusOutbox).count() == 0
    assert relay.flush() == 0
