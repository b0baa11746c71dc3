"""A service's RPC reply path is probed and mended: once replies stop reaching its reply queue
(here its binding to ``nameko-rpc`` is removed behind its back, as a broker that lost the queue's
node may leave it), its calls time out only until the next probe, then get their replies again.

Real broker, real containers: ``caller`` calls ``echo`` through ``TimedRpcProxy``; the test
calls ``caller`` through the standalone proxy (whose own reply path is not touched)."""

from __future__ import annotations

import time

import pytest

from services.exceptions import BackendTimeout
from services.infra import metrics
from services.infra.inbound import rpc
from services.infra.rpc import TimedRpcProxy, standalone_proxy
from tests.conftest import make_db_uris, service_config
from tools.broker import ManagementApi

PROBE_SECONDS = 0.5
RPC_TIMEOUT = 1.0


class EchoService:
    name = "echo"

    @rpc
    def echo(self, value):
        return value


class CallerService:
    name = "caller"

    echo = TimedRpcProxy("echo")

    @rpc
    def ask(self, value):
        return self.echo.echo(value)


@pytest.fixture
def api(request) -> ManagementApi:
    return ManagementApi(request.config.getoption("RABBIT_API_URI"))


def mended(reason: str) -> float:
    return (
        metrics.REGISTRY.get_sample_value(
            "mensageria_rpc_reply_path_mended_total", {"service": "caller", "reason": reason}
        )
        or 0.0
    )


def reply_bindings(api: ManagementApi, vhost: str) -> list[dict]:
    queues = [
        q["name"] for q in api.request("GET", "queues", vhost).json() if q["name"].startswith("rpc.reply-caller-")
    ]
    assert len(queues) == 1, queues
    bindings = api.request("GET", "queues", vhost, queues[0], "bindings").json()
    return [b for b in bindings if b["source"] == "nameko-rpc"]


def answers(proxy, value) -> bool:
    try:
        return proxy.caller.ask(value) == value
    except BackendTimeout:  # the caller's call to echo timed out: its reply went nowhere
        return False


@pytest.mark.parametrize("probe_seconds", [PROBE_SECONDS, 0])
def test_a_broken_reply_path_is_mended_by_the_next_probe(
    container_factory, rabbit_config, api, tmp_path, request, probe_seconds
):
    config = service_config(
        rabbit_config["AMQP_URI"],
        make_db_uris("sqlite", tmp_path, request),
        RPC_TIMEOUT=RPC_TIMEOUT,
        REPLY_PROBE_SECONDS=probe_seconds,
    )
    for service in (EchoService, CallerService):
        container_factory(service, config).start()
    vhost = rabbit_config["vhost"]

    with standalone_proxy({**config, "RPC_TIMEOUT": 10}) as proxy:
        assert proxy.caller.ask("before") == "before"
        before = mended("unroutable")
        [binding] = reply_bindings(api, vhost)
        api.request(
            "DELETE",
            "bindings",
            vhost,
            "e",
            "nameko-rpc",
            "q",
            binding["destination"],
            binding["properties_key"],
        )
        assert reply_bindings(api, vhost) == []

        assert not answers(proxy, "lost")  # its reply had nowhere to go
        results = []
        deadline = time.monotonic() + 10 * (PROBE_SECONDS + RPC_TIMEOUT)
        while time.monotonic() < deadline and not (results and results[-1]):
            results.append(answers(proxy, f"after {len(results)}"))

    if probe_seconds:
        assert results[-1], results  # mended: replies reach the caller again
        assert mended("unroutable") == before + 1
        assert len(reply_bindings(api, vhost)) == 1  # the queue was bound again
    else:  # without probes, the same break is never mended (what the probe is for)
        assert not any(results), results
        assert reply_bindings(api, vhost) == []
