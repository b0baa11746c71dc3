"""Fault tests: the system as real processes, broken on purpose mid-run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from tests.conftest import make_db_uris
from tests.e2e.support import (
    CONFIG,
    MODULES,
    ROOT,
    System,
    amqp_username,
    free_port,
    process_env,
    rabbit_vhost,
    start_process,
    stop_processes,
    vhost_uri,
)


def pytest_collection_modifyitems(items):
    for item in items:
        item.add_marker(pytest.mark.faults)


def start_supervised(module: str, env: dict[str, str], log_path) -> subprocess.Popen:
    """As ``make run`` starts a service: under ``services.launch``."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "services.launch", "--config", CONFIG, module],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def start_system(backend: str, amqp_uri: str, log_dir, request, supervised: bool = False, **env: str) -> System:
    port = free_port()
    system = System(
        backend=backend,
        base_url=f"http://127.0.0.1:{port}",
        vhost="",
        env={**process_env(amqp_uri, make_db_uris(backend, log_dir, request), port), **env},
        log_dir=log_dir,
    )
    start = start_supervised if supervised else start_process
    for name, module in MODULES.items():
        system.processes[name] = start(module, system.env, system.log_path(name))
    return system


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
        system = start_system(backend, amqp_uri, tmp_path, request, supervised, **env)
        systems.append(system)
        if wait:
            system.wait_ready(timeout=60)
        return system

    yield make
    for system in systems:
        stop_processes(system.processes)
    for context in vhosts:
        context.__exit__(None, None, None)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for system in getattr(item, "_systems", []):
            report.sections.append(("mensageria logs", system.log_tails()))
    return report
