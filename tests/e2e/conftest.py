"""The running system, once per backend for the whole e2e package.

``system`` starts students, status and the gateway as ``nameko run`` processes
on a vhost of their own, against SQLite files or the PostgreSQL test databases,
and waits until ``GET /ready`` answers 200. Tests isolate their data with random
ids (``unique``), so they share one system per backend.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import BACKENDS, make_db_uris
from tests.e2e.support import System, running_system


@pytest.fixture(scope="session")
def amqp_uri(request) -> str:
    return request.config.getoption("RABBIT_AMQP_URI")


@pytest.fixture(scope="package", params=BACKENDS)
def system(request, rabbit_manager, amqp_uri, tmp_path_factory) -> Iterator[System]:
    backend = request.param
    log_dir = tmp_path_factory.mktemp(f"e2e-{backend}")
    db_uris = make_db_uris(backend, log_dir, request)
    api = request.config.getoption("RABBIT_API_URI")  # the console shows the queues through it
    with running_system(backend, rabbit_manager, amqp_uri, db_uris, log_dir, RABBIT_API_URI=api) as system:
        yield system


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    system = getattr(item, "funcargs", {}).get("system")
    if report.failed and isinstance(system, System):
        report.sections.append((f"mensageria logs ({system.backend}, {system.log_dir})", system.log_tails()))
    return report
