"""The gateway's lines per request: the worker line always, eventlet's access line only when asked."""

from __future__ import annotations

import logging

import pytest
import requests

from gateway.service import GatewayService
from tests.e2e.support import free_port


@pytest.mark.parametrize("access_log", [False, True])
def test_one_worker_line_per_request_and_the_access_line_on_demand(runner_factory, config, caplog, access_log):
    port = free_port()
    settings = {**config, "WEB_SERVER_ADDRESS": f"127.0.0.1:{port}", "GATEWAY_ACCESS_LOG": access_log}
    runner_factory(settings, GatewayService).start()
    caplog.set_level(logging.INFO)

    assert requests.get(f"http://127.0.0.1:{port}/health?probe=1", timeout=10).status_code == 200

    worker = [r for r in caplog.records if r.name == "mensageria.worker" and "GET /health" in r.getMessage()]
    assert len(worker) == 1, caplog.text
    assert worker[0].http_status == 200 and worker[0].client == "127.0.0.1"
    access = [r for r in caplog.records if r.name == "nameko.web.server" and "/health?probe=1" in r.getMessage()]
    assert len(access) == (1 if access_log else 0), caplog.text
