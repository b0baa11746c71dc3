"""Fault tests: the system as real processes, broken on purpose mid-run."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.conftest import make_db_uris
from tests.e2e.support import System, amqp_username, rabbit_vhost, start_system, stop_processes, vhost_uri
from tools.local_cluster import PrivateCluster


def pytest_configure(config):
    config.addinivalue_line("markers", "faults: breaks the running system on purpose (processes, broker, database)")


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.faults)


@pytest.fixture
def make_system(request, rabbit_manager, tmp_path) -> Iterator[Callable[..., System]]:
    """``make_system(backend, amqp_uri=None)``: a running system on its own vhost
    (or on the given broker), stopped at teardown."""
    systems: list[System] = []
    vhosts = []

    def make(
        backend: str, amqp_uri: str | None = None, wait: bool = True, supervised: bool = False, **env: str
    ) -> System:
        if amqp_uri is None:
            base = request.config.getoption("RABBIT_AMQP_URI")
            context = rabbit_vhost(rabbit_manager, amqp_username(base))
            vhosts.append(context)
            amqp_uri = vhost_uri(base, context.__enter__())
        system = start_system(backend, amqp_uri, make_db_uris(backend, tmp_path, request), tmp_path, supervised, **env)
        systems.append(system)
        if wait:
            system.wait_ready(timeout=60)
        return system

    yield make
    for system in systems:
        stop_processes(system.processes)
    for context in vhosts:
        context.__exit__(None, None, None)


@pytest.fixture
def cluster() -> Iterator[PrivateCluster]:
    """Three clustered RabbitMQ nodes of the test's own, with a vhost for the system; stopped and
    removed at teardown. Ask for it before ``make_system``: the system stops while it is still there."""
    with PrivateCluster() as cluster:
        yield cluster
