"""``AMQP_URI`` listing several nodes: split, checked, redacted; the pika client's parameters
for each; the preflight's one line naming them all. No broker: nothing listens on the ports."""

from __future__ import annotations

import pytest
from kombu import Connection

from clients.connection import connection_parameters, node_urls
from gateway.console import queues
from services.infra import brokers
from tests.e2e.support import free_ports
from tools import preflight

ONE = "amqp://app:pw1@rabbit-1:5672/mensageria"
THREE = ";".join(f"amqp://app:pw{n}@rabbit-{n}:5672/mensageria" for n in (1, 2, 3))


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (ONE, [ONE]),
        (THREE, [f"amqp://app:pw{n}@rabbit-{n}:5672/mensageria" for n in (1, 2, 3)]),
        (f" {ONE} ; ", [ONE]),  # blanks and a trailing separator are no node
    ],
)
def test_nodes_in_order(uri, expected):
    assert brokers.nodes(uri) == expected
    assert node_urls(uri) == expected  # the pika client reads them alike


@pytest.mark.parametrize(
    "uri",
    [
        "",
        " ; ",
        "amqp://app:pw@rabbit-1:5672/one;amqp://app:pw@rabbit-2:5672/two",  # two vhosts
        "amqp://app:pw@rabbit-1:5672/v;amqp://other:pw@rabbit-2:5672/v",  # two users
    ],
)
def test_no_node_or_nodes_that_disagree_are_refused(uri):
    with pytest.raises(ValueError) as error:
        brokers.nodes(uri)
    assert "pw" not in str(error.value)


def test_the_vhost_is_the_nodes_one():
    assert brokers.vhost(THREE) == "mensageria"
    assert brokers.vhost("amqp://a:b@h1:5672/;amqp://a:b@h2") == "/"
    assert queues.vhost_of(THREE) == "mensageria"


def test_every_node_s_password_is_masked():
    assert brokers.redacted(THREE) == ";".join(f"amqp://app:***@rabbit-{n}:5672/mensageria" for n in (1, 2, 3))
    assert preflight.redacted("http://admin:secret@rabbit-1:15672") == "http://admin:***@rabbit-1:15672"


def test_kombu_keeps_the_other_nodes_as_failover_alternates():
    # what nameko hands kombu, unchanged: the first node now, the others on failure
    connection = Connection(THREE)
    assert (connection.hostname, connection.virtual_host) == ("rabbit-1", "mensageria")
    assert connection.alt == brokers.nodes(THREE)


def test_pika_gets_one_parameter_set_per_node_in_order():
    uri = THREE.replace("rabbit-2:5672/mensageria", "rabbit-2:5672/mensageria?socket_timeout=7")
    parameters = connection_parameters(uri, "RpcClient (main)", timeout=3.0)
    assert [(p.host, p.port, p.virtual_host) for p in parameters] == [
        (f"rabbit-{n}", 5672, "mensageria") for n in (1, 2, 3)
    ]
    assert [p.credentials.password for p in parameters] == ["pw1", "pw2", "pw3"]
    assert [p.socket_timeout for p in parameters] == [3.0, 7.0, 3.0]  # a node's own setting wins
    assert {p.client_properties["connection_name"] for p in parameters} == {"RpcClient (main)"}
    with pytest.raises(ValueError):
        connection_parameters(" ; ", "RpcClient (main)", timeout=3.0)


def test_no_node_answering_is_one_line_naming_them_all():
    ports = free_ports(2)
    uri = ";".join(f"amqp://guest:secret@127.0.0.1:{port}/v" for port in ports)
    assert brokers.first_reachable(uri, timeout=1.0) is None
    assert not preflight.broker_reachable(uri, timeout=1.0)
    line = preflight.broker_unreachable(uri)
    assert "\n" not in line and "secret" not in line
    assert all(f"127.0.0.1:{port}/v" in line for port in ports), line
    assert preflight.broker_unreachable(ONE).startswith("RabbitMQ is not reachable at amqp://app:***@rabbit-1")


def test_the_console_asks_the_next_management_api_when_one_is_away(monkeypatch):
    import requests

    asked = []

    def read(api_uri, vhost, timeout):
        asked.append(api_uri)
        if "rabbit-1" in api_uri:
            raise requests.ConnectionError("refused")
        return [{"name": "rpc-status"}]

    monkeypatch.setattr(queues, "_read", read)
    api = "http://m:pw@rabbit-1:15672;http://m:pw@rabbit-2:15672;http://m:pw@rabbit-3:15672"
    assert queues.read(api, "mensageria", 1.0) == [{"name": "rpc-status"}]
    assert asked == ["http://m:pw@rabbit-1:15672", "http://m:pw@rabbit-2:15672"]


def test_replies_come_through_transient_queues_named_as_nameko_names_them():
    """A durable reply queue stays behind on a lost node (``NOT_FOUND - home node ... is down``);
    a transient one is declared again on the node the caller moves to."""
    from unittest.mock import patch

    from nameko.containers import ServiceContainer
    from nameko.messaging import QueueConsumer
    from nameko.rpc import RPC_REPLY_QUEUE_TTL, ReplyListener
    from nameko.standalone.rpc import PollingQueueConsumer

    from gateway.service import GatewayService
    from services.infra.rpc import standalone_proxy

    config = {"AMQP_URI": THREE, "REQUEST_ID_SECRET": "s", "API_KEY_SECRET": "s"}
    container = ServiceContainer(GatewayService, config)
    [listener] = {type(e): e for e in container.extensions if isinstance(e, ReplyListener)}.values()
    proxy = standalone_proxy(config)
    with patch.object(QueueConsumer, "register_provider"), patch.object(PollingQueueConsumer, "register_provider"):
        listener.setup()
        proxy.start()
    for queue, caller in ((listener.queue, "gateway"), (proxy._reply_listener.queue, "standalone_rpc_proxy")):
        assert queue.name == f"rpc.reply-{caller}-{queue.routing_key}"
        assert (queue.durable, queue.exchange.name) == (False, "nameko-rpc")
        assert queue.queue_arguments == {"x-expires": RPC_REPLY_QUEUE_TTL}


def test_the_broker_tools_take_the_first_of_several_management_apis():
    from tools.broker import ManagementApi

    api = ManagementApi("http://admin:pw@rabbit-1:15672;http://admin:pw@rabbit-2:15672")
    assert (api.base, api.username, api.shown) == (
        "http://rabbit-1:15672/api",
        "admin",
        "http://admin:***@rabbit-1:15672",
    )
