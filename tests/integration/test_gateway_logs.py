"""The gateway's lines per request: the worker line always, eventlet's access line only when asked."""

from __future__ import annotations

import logging
import time

import pytest
import requests

from gateway.service import GatewayService
from tests.e2e.support import free_port


def lines(caplog, logger: str, text: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == logger and text in r.getMessage()]


def wait_for_lines(caplog, logger: str, text: str, count: int, timeout: float = 10.0) -> list[logging.LogRecord]:
    """The lines, once there are ``count``: both kinds are written as the response ends, maybe after
    the client has it."""
    deadline = time.monotonic() + timeout
    while len(lines(caplog, logger, text)) < count and time.monotonic() < deadline:
        time.sleep(0.01)
    return lines(caplog, logger, text)


@pytest.mark.parametrize("access_log", [False, True])
def test_one_worker_line_per_request_and_the_access_line_on_demand(runner_factory, config, caplog, access_log):
    port = free_port()
    settings = {**config, "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}", "GATEWAY_ACCESS_LOG": access_log}
    runner_factory(settings, GatewayService).start()
    caplog.set_level(logging.INFO)

    assert requests.get(f"http://127.0.0.1:{port}/health?probe=1", timeout=10).status_code == 200
    worker = wait_for_lines(caplog, "mensageria.worker", "GET /health", count=1)
    # a second request's line written: the first one's lines are all written by now
    assert requests.get(f"http://127.0.0.1:{port}/health?probe=2", timeout=10).status_code == 200
    assert len(wait_for_lines(caplog, "mensageria.worker", "GET /health", count=2)) == 2, caplog.text
    if access_log:
        wait_for_lines(caplog, "nameko.web.server", "/health?probe=1", count=1)

    assert len(worker) == 1, caplog.text
    assert worker[0].http_status == 200 and worker[0].client == "127.0.0.1"
    access = lines(caplog, "nameko.web.server", "/health?probe=1")
    assert len(access) == (1 if access_log else 0), caplog.text
