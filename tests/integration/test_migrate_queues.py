"""``python -m tools.migrate_queues`` on a real broker, in a vhost of the test's own: classic queues
with messages waiting become quorum queues, bound as before, holding the same messages."""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection, Consumer, Exchange, Producer, Queue

from services.certificates import CertificatesService
from services.infra.parking import dead_letter_queue
from services.infra.retry import delay_queue
from services.infra.settings import Settings
from services.infra.topology import rpc_queue, subscriber_queues
from services.status import StatusService
from services.students import StudentsService
from tests.conftest import make_db_uris, service_config
from tests.integration.conftest import wait_for
from tests.integration.test_reliability import tracked
from tests.integration.test_students import new_student
from tools import migrate_queues
from tools.broker import ManagementApi

CLASSIC = {"QUEUE_TYPE": "classic"}
QUORUM: dict = {}  # the default
HANDLER = "evt-gateway-status_change_requested--status.handle_status_change_requested"
MESSAGES = 7
BROKER_WRITTEN = "x-delivery-count"


@pytest.fixture
def api(request) -> ManagementApi:
    return ManagementApi(request.config.getoption("RABBIT_API_URI"))


@pytest.fixture
def amqp_uri(rabbit_config) -> str:
    return rabbit_config["AMQP_URI"]


def installation(config: dict) -> list[Queue]:
    """Queues of every kind, as the services declare them under ``config``."""
    settings = Settings.from_config(config)
    return [
        rpc_queue("students", config),
        *subscriber_queues("gateway", config),
        delay_queue(HANDLER, 60, settings),  # a minute: nothing expires during the test
        dead_letter_queue("status", settings),
    ]


def declare(amqp_uri: str, queues: list[Queue]) -> None:
    with Connection(amqp_uri) as connection:
        channel = connection.channel()
        for queue in queues:
            queue(channel).declare()
        # an operator's own extra binding must survive too
        audit = Exchange("audit", "topic", durable=True)
        audit(channel).declare()
        channel.queue_bind(HANDLER, "audit", "status.#")


def fill(amqp_uri: str, queues: list[Queue], count: int = MESSAGES) -> dict[str, list[dict]]:
    """``count`` messages in each queue, every property set; what was sent, per queue."""
    sent: dict[str, list[dict]] = {}
    with Connection(amqp_uri) as connection:
        producer = Producer(connection.channel())
        for queue in queues:
            sent[queue.name] = []
            for n in range(count):
                message = {
                    "body": f'{{"n": {n}, "queue": "{queue.name}"}}'.encode(),
                    "headers": {"nameko.correlation_id": f"c-{n}", "x-mensageria-attempt": n, "nested": {"a": [1, 2]}},
                    "properties": {
                        "message_id": str(uuid.uuid4()),
                        "correlation_id": f"corr-{n}",
                        "reply_to": f"reply-{n}",
                        "type": "test",
                        "app_id": "migration-test",
                        "priority": n % 3,
                        "timestamp": 1_704_164_640 + n,
                        "delivery_mode": 2,
                    },
                }
                producer.publish(
                    message["body"],
                    exchange="",
                    routing_key=queue.name,
                    headers=message["headers"],
                    content_type="application/json",
                    content_encoding="utf-8",
                    **message["properties"],
                )
                sent[queue.name].append(message)
    return sent


def drain(amqp_uri: str, name: str) -> list[dict]:
    """Every message of ``name``, taken and acked, in order."""
    found = []
    with Connection(amqp_uri) as connection:
        channel = connection.channel()
        channel.auto_decode = False
        while (message := channel.basic_get(name, no_ack=True)) is not None:
            properties = dict(message.properties)
            headers = {k: v for k, v in properties.pop("application_headers", {}).items() if k != BROKER_WRITTEN}
            found.append({"body": message.body, "headers": headers, "properties": properties})
    return found


def as_sent(message: dict) -> dict:
    properties = {**message["properties"], "content_type": "application/json", "content_encoding": "utf-8"}
    return {"body": message["body"], "headers": message["headers"], "properties": properties}


def broker_state(api: ManagementApi, vhost: str) -> dict[str, dict]:
    """Each queue's type, arguments and bindings (but the default one)."""
    state = {}
    for queue in api.request("GET", "queues", vhost).json():
        bindings = api.request("GET", "queues", vhost, queue["name"], "bindings").json()
        state[queue["name"]] = {
            "type": queue["type"],
            "arguments": queue["arguments"],
            "bindings": sorted((b["source"], b["routing_key"]) for b in bindings if b["source"]),
        }
    return state


def migrate(amqp_uri: str, api: ManagementApi, config: dict = QUORUM, dry_run: bool = False) -> list[str]:
    return migrate_queues.run(config, amqp_uri, api, dry_run)


def test_classic_queues_with_messages_become_quorum_bound_and_filled_as_before(amqp_uri, api, rabbit_config):
    vhost = rabbit_config["vhost"]
    classic = installation(CLASSIC)
    declare(amqp_uri, classic)
    declare(amqp_uri, [Queue("someone-elses", durable=True)])  # not mensageria's: left alone
    sent = fill(amqp_uri, classic)
    before = broker_state(api, vhost)
    assert {before[q.name]["type"] for q in classic} == {"classic"}

    lines = migrate(amqp_uri, api)

    assert len(lines) == len(classic) and all(line.startswith("migrated ") for line in lines)
    assert all(f"{MESSAGES} message(s) moved" in line for line in lines)
    after = broker_state(api, vhost)
    assert set(after) == set(before), "nothing left behind, nothing lost"
    assert after["someone-elses"] == before["someone-elses"]
    for queue in installation(QUORUM):
        assert after[queue.name]["type"] == "quorum", queue.name
        assert after[queue.name]["arguments"] == queue.queue_arguments, queue.name
        assert after[queue.name]["bindings"] == before[queue.name]["bindings"], queue.name
    assert ("audit", "status.#") in after[HANDLER]["bindings"]
    for queue in classic:
        assert drain(amqp_uri, queue.name) == [as_sent(m) for m in sent[queue.name]]


def test_a_second_run_changes_nothing(amqp_uri, api, rabbit_config):
    declare(amqp_uri, installation(CLASSIC))
    fill(amqp_uri, installation(CLASSIC), 2)
    migrate(amqp_uri, api)
    before = broker_state(api, rabbit_config["vhost"])

    assert migrate(amqp_uri, api) == [
        f"nothing to migrate on vhost {rabbit_config['vhost']!r}: every queue is declared as the services declare it"
    ]
    assert broker_state(api, rabbit_config["vhost"]) == before
    assert len(drain(amqp_uri, HANDLER)) == 2


def test_refuses_while_a_consumer_is_attached(amqp_uri, api, rabbit_config, request, monkeypatch, capsys):
    declare(amqp_uri, installation(CLASSIC))
    fill(amqp_uri, installation(CLASSIC), 3)
    before = broker_state(api, rabbit_config["vhost"])
    monkeypatch.setenv("AMQP_URI", amqp_uri)
    monkeypatch.setenv("RABBIT_API_URI", request.config.getoption("RABBIT_API_URI"))

    with Connection(amqp_uri) as connection:
        consumer = Consumer(connection.channel(), [Queue(HANDLER, no_declare=True)], on_message=lambda m: None)
        consumer.qos(prefetch_count=0)  # (nothing is taken: the test only needs it attached)
        with consumer:
            code = migrate_queues.main([])
            err = capsys.readouterr().err

    assert code == 1
    assert err.count("\n") == 1 and HANDLER in err and "consumer" in err and "stop the services" in err
    assert broker_state(api, rabbit_config["vhost"]) == before, "nothing was changed"


def test_dry_run_lists_and_changes_nothing(amqp_uri, api, rabbit_config, request, monkeypatch, capsys):
    declare(amqp_uri, installation(CLASSIC))
    fill(amqp_uri, installation(CLASSIC), 4)
    before = broker_state(api, rabbit_config["vhost"])
    monkeypatch.setenv("AMQP_URI", amqp_uri)
    monkeypatch.setenv("RABBIT_API_URI", request.config.getoption("RABBIT_API_URI"))

    assert migrate_queues.main(["--dry-run"]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split(":")[0] for line in lines) == sorted(
        f"would migrate {q.name}" for q in installation(CLASSIC)
    )
    assert all("classic → quorum" in line and "4 message(s)" in line for line in lines)
    assert f"would migrate {HANDLER}: classic → quorum; bound to audit (status.#), gateway.events" in "\n".join(lines)
    assert broker_state(api, rabbit_config["vhost"]) == before


def test_resumes_after_a_crash_with_the_queue_deleted(amqp_uri, api, rabbit_config):
    """The crash came after the messages were moved out and the queue deleted: its temporary queue
    holds them, and the bindings."""
    (handler,) = subscriber_queues("gateway", CLASSIC)
    declare(amqp_uri, [handler])
    sent = fill(amqp_uri, [handler])
    bindings = broker_state(api, rabbit_config["vhost"])[HANDLER]["bindings"]
    with Connection(amqp_uri) as connection:
        broker = migrate_queues.Broker(connection)
        broker.declare(HANDLER + ".migrating", {"x-queue-type": "quorum"})
        broker.move(HANDLER, HANDLER + ".migrating")
        broker.bind(HANDLER + ".migrating", [{"source": s, "routing_key": k, "arguments": {}} for s, k in bindings])
        broker.delete(HANDLER)

    (line,) = migrate(amqp_uri, api)

    assert line == f"{HANDLER}: resumed, {MESSAGES} message(s) drained back; already quorum"
    after = broker_state(api, rabbit_config["vhost"])
    assert HANDLER + ".migrating" not in after
    assert after[HANDLER]["type"] == "quorum" and after[HANDLER]["bindings"] == bindings
    assert drain(amqp_uri, HANDLER) == [as_sent(m) for m in sent[HANDLER]]


def test_resumes_after_a_crash_half_way_through_the_move(amqp_uri, api, rabbit_config):
    """The crash came while the messages were moving out: some in each queue, the queue still
    classic. Drained back, then migrated: all of them, once each."""
    classic = installation(CLASSIC)
    declare(amqp_uri, classic)
    sent = fill(amqp_uri, classic)
    with Connection(amqp_uri) as connection:
        channel = connection.channel()
        channel.queue_declare(HANDLER + ".migrating", durable=True, auto_delete=False, arguments={})
        for _ in range(3):
            message = channel.basic_get(HANDLER, no_ack=False)
            channel.basic_publish(message, exchange="", routing_key=HANDLER + ".migrating")
            channel.basic_ack(message.delivery_tag)

    lines = migrate(amqp_uri, api)

    assert len(lines) == len(classic)
    after = broker_state(api, rabbit_config["vhost"])
    assert not [name for name in after if name.endswith(".migrating")]
    assert after[HANDLER]["type"] == "quorum"
    received = drain(amqp_uri, HANDLER)
    expected = [as_sent(m) for m in sent[HANDLER]]
    assert sorted(received, key=repr) == sorted(expected, key=repr)


def test_an_installation_on_classic_queues_moves_to_quorum_and_goes_on(
    container_factory, rabbit_config, api, tmp_path, request
):
    """The system ran on classic queues; an event waits for the status service, which is down. After
    the migration the services start on quorum queues, declared as they were migrated, and the event
    is handled."""
    from nameko.standalone.rpc import ClusterRpcProxy

    db_uris = make_db_uris("sqlite", tmp_path, request)
    classic = service_config(rabbit_config["AMQP_URI"], db_uris, MAIL_DIR=str(tmp_path / "mail"), **CLASSIC)
    quorum = service_config(rabbit_config["AMQP_URI"], db_uris, MAIL_DIR=str(tmp_path / "mail"))
    unique = uuid.uuid4().hex[:10]
    students = container_factory(StudentsService, classic)
    status = container_factory(StatusService, classic)
    certificates = container_factory(CertificatesService, classic)  # a service with handlers and retries
    for container in (students, status, certificates):
        container.start()
    with ClusterRpcProxy(classic, timeout=10) as rpc:
        first = new_student(rpc, unique, 1)
        wait_for(lambda: tracked(rpc, first["id"]))
        status.stop()
        second = new_student(rpc, unique, 2)  # student_created waits in status' classic queue
    students.stop()
    certificates.stop()
    vhost = rabbit_config["vhost"]
    assert broker_state(api, vhost)["rpc-status"]["type"] == "classic"

    lines = migrate(rabbit_config["AMQP_URI"], api)

    assert any(line.startswith("migrated evt-students-student_created--status.") for line in lines)
    state = broker_state(api, vhost)
    ours = [name for name in state if not name.startswith("rpc.reply-")]
    assert {state[name]["type"] for name in ours} == {"quorum"}, state
    for container in (container_factory(cls, quorum) for cls in (StudentsService, StatusService, CertificatesService)):
        container.start()
    with ClusterRpcProxy(quorum, timeout=10) as rpc:
        wait_for(lambda: tracked(rpc, second["id"]))
        assert new_student(rpc, unique, 3)["status"] == "enrolled"
