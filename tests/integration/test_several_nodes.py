"""``AMQP_URI`` listing several nodes, the first of them down: every connection the services
make (consumers, RPC replies, publishers, the outbox relay, the dead-letter queue, the
standalone proxy) takes the next node.

The first node is a port nothing listens on; the second is the test's vhost on the real broker.
Losing a node that was in use is the fault tests' business (``tests/faults/test_cluster.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from nameko.standalone.rpc import ClusterRpcProxy

from tests.conftest import service_config
from tests.e2e.support import ROOT, free_port
from tests.integration.conftest import settled, wait_for
from tests.integration.test_students import new_student


def dead_node_first(amqp_uri: str) -> str:
    vhost = amqp_uri.rsplit("/", 1)[1]
    return f"amqp://guest:guest@127.0.0.1:{free_port()}/{vhost};{amqp_uri}"


@pytest.fixture
def config(rabbit_config, db_uris, tmp_path) -> dict:
    return service_config(dead_node_first(rabbit_config["AMQP_URI"]), db_uris, MAIL_DIR=str(tmp_path / "mail"))


def test_services_work_with_the_first_node_down(config, services, unique, received):
    assert ";" in config["AMQP_URI"]
    with ClusterRpcProxy(config, timeout=10) as rpc:
        student = new_student(rpc, unique)  # RPC in, a reply out, student_created through the outbox
        request = rpc.status.request_status_change(student["id"], "active", reason="term starts", actor="t")
        done = wait_for(lambda: settled(rpc, request["request_id"]))
        assert done["state"] == "applied"
        # student_status_changed, published by the status outbox, reaches its subscribers
        wait_for(lambda: [e for e in received if e["request_id"] == request["request_id"]])
        wait_for(lambda: rpc.students.get_student(student["id"])["status"] == "active")
        assert rpc.status.count_dead_letters() == 0  # the dead-letter queue's own connection
        assert rpc.status.list_dead_letters() == []


def test_the_run_command_s_broker_check_passes_when_any_node_answers(rabbit_config):
    result = subprocess.run(
        [sys.executable, "-m", "tools.preflight", "broker"],
        cwd=ROOT,
        env={**os.environ, "AMQP_URI": dead_node_first(rabbit_config["AMQP_URI"])},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (result.returncode, result.stderr) == (0, "")
