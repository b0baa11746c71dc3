"""Beyond one broker: the system on a three-node RabbitMQ cluster of the test's own
(:class:`~tools.local_cluster.PrivateCluster`), every process given all three nodes in
``AMQP_URI``, and a node SIGKILLed mid-run.

The node killed in the proofs is the one leading the status service's queue (the management
API's ``leader`` of a quorum queue, ``node`` of a classic one). Every process connects to the
first node that answers, so that is also the node all of them are connected to: each loses its
connection, and the supervisor (``tools.launch``, as ``make run`` starts them) restarts any
whose container died. The HTTP clients behave as careful clients do: an ``Idempotency-Key`` on
every request, sent again after a 503, a 504 or no answer.

Each proof prints its counts on a ``FAULT REPORT`` line (run with ``-s``) and asserts that
nothing accepted was lost or applied twice.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import eventlet
import pytest

from services.infra.rpc import standalone_proxy
from tests.e2e.support import ROOT, System, poll
from tests.faults.support import Workload, assert_nothing_lost
from tools.local_cluster import PrivateBroker, PrivateCluster

TOTAL = 2000
STUDENTS = 200
CLIENTS = 16
RETRY_FOR = 120.0  # seconds a client keeps sending a request again
BULK_ROWS_PER_STUDENT = 100  # 20,000 rows
STATUS_QUEUE = "evt-gateway-status_change_requested--status.handle_status_change_requested"

pytestmark = pytest.mark.timeout(900)


def start_on(cluster: PrivateCluster, make_system, **env: str) -> System:
    """The five processes, supervised as ``make run`` runs them, with every node in ``AMQP_URI``."""
    api = ";".join(f"http://guest:guest@127.0.0.1:{node.management_port}" for node in cluster.nodes)
    system = make_system("sqlite", amqp_uri=cluster.amqp_uri, supervised=True, wait=False, RABBIT_API_URI=api, **env)
    system.wait_ready(timeout=120)
    return system


def kill_leader(cluster: PrivateCluster, queue: str) -> dict:
    """SIGKILL the node leading ``queue``; what it was (its name, the queues it led)."""
    leader = cluster.leader(queue)
    queues = cluster.api(f"queues/{cluster.vhost}").json()
    led = sorted(q["name"] for q in queues if (q.get("leader") or q.get("node")) == leader.node)
    leader.kill()
    return {"node": leader.node, "led": led, "queues": len(queues), "at": time.monotonic()}


def restarts(system: System) -> dict[str, int]:
    """How many times the supervisor restarted each process (its ``restarting in`` lines)."""
    counts = {name: system.log_path(name).read_text().count("; restarting in") for name in system.processes}
    return {name: count for name, count in counts.items() if count}


def test_status_queue_leader_killed_mid_run(cluster, make_system, unique):
    system = start_on(cluster, make_system)
    workload = Workload(system)
    workload.create_students(STUDENTS, unique)
    killed: list[dict] = []

    def on_progress(accepted: int) -> None:
        if accepted >= TOTAL // 2 and not killed:
            killed.append({})
            eventlet.spawn(lambda: killed.__setitem__(0, kill_leader(cluster, STATUS_QUEUE)))

    started = time.monotonic()
    workload.submit(TOTAL, concurrency=CLIENTS, on_progress=on_progress, retry_for=RETRY_FOR)
    submitted_in = time.monotonic() - started
    system.wait_ready(timeout=120)
    report = workload.audit(timeout=300)

    assert killed and killed[0], "the leader was killed mid-run"
    report |= {
        "killed": killed[0]["node"],
        "queues_it_led": f"{len(killed[0]['led'])} of {killed[0]['queues']}",
        "submit_seconds": round(submitted_in, 1),
        "restarted": restarts(system),
        "leader_now": cluster.leader(STATUS_QUEUE).node,
    }
    assert STATUS_QUEUE in killed[0]["led"], killed[0]
    assert report["leader_now"] != report["killed"], report
    assert report["accepted"] == TOTAL, report  # a client that retries gets every request in
    assert_nothing_lost(report)


def test_status_queue_leader_killed_while_a_bulk_job_is_applied(cluster, make_system, unique):
    total = STUDENTS * BULK_ROWS_PER_STUDENT
    # batches of 200: the job is still being applied when the kill comes (the default takes 2,000 a time)
    system = start_on(cluster, make_system, BULK_MAX_ROWS=str(total), STATUS_BATCH_SIZE="200")
    workload = Workload(system)
    workload.create_students(STUDENTS, unique)
    job = workload.submit_job(rows_per_student=BULK_ROWS_PER_STUDENT)
    assert job["total"] == total, job

    # killed once a part of the job is applied and most of it is not
    progress = poll(
        lambda: workload.job(job["job_id"]),
        lambda seen: seen is not None and seen["applied"] >= total // 20,
        timeout=120,
        interval=0.2,
    )
    killed = kill_leader(cluster, STATUS_QUEUE)
    report = workload.audit_job(job["job_id"], timeout=600)
    report |= {
        "killed": killed["node"],
        "queues_it_led": f"{len(killed['led'])} of {killed['queues']}",
        "applied_at_kill": progress["applied"],
        "pending_at_kill": progress["pending"],
        "restarted": restarts(system),
    }

    print(f"\nFAULT REPORT bulk job of {total} rows, the status queue's leader killed: {report}")
    assert progress["pending"] > 0, "the job was still being applied when the node was killed"
    assert report["state"] == "done" and report["applied"] == total, report
    assert (report["rejected"], report["failed"], report["lost"]) == (0, 0, 0), report
    assert report["history_rows"] == total and report["duplicated"] == 0, report
    assert report["chain_errors"] == 0 and report["read_copy_mismatches"] == 0, report


def test_clients_move_to_another_node_when_theirs_is_killed(cluster, make_system, unique, tmp_path):
    """The pika client (RPC, publisher, subscriber) and the standalone proxy ``nameko shell``
    uses, connected to the second node (listed first) while the services use the first."""
    system = start_on(cluster, make_system)
    doomed, spare = cluster.nodes[1], cluster.nodes[2]
    url = f"{cluster.node_uri(doomed)};{cluster.node_uri(spare)}"
    ready, go = tmp_path / "ready", tmp_path / "go"
    params = {"url": url, "unique": unique, "queue": f"pika-test-{unique}", "ready_file": str(ready)}
    params["go_file"] = str(go)
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.integration.test_client", "across_a_lost_node", json.dumps(params)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with standalone_proxy({"AMQP_URI": url, "RPC_TIMEOUT": 10}) as shell:
            assert shell.students.ping() == {"service": "students", "ok": True}
            poll(lambda: ready.exists() or child.poll() is not None, bool, timeout=60)
            assert child.poll() is None, child.communicate()
            poll(lambda: _connected_to(cluster, doomed), bool, timeout=30)  # the client is on the doomed node
            doomed.kill()
            go.touch()
            answers = _after_the_loss(lambda: shell.students.ping())
        out, err = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0, f"{out}\n{err}"
    seen = json.loads(out.splitlines()[-1])

    assert seen["ping"] == {"service": "students", "ok": True}
    assert seen["changes"] == [["enrolled", "active"], ["active", "suspended"]]  # each once, in order
    assert seen["own"] == [1, 2]
    assert any(line.startswith("RpcClient: connection lost") for line in seen["log"]), seen["log"]
    assert answers["result"] == {"service": "students", "ok": True}, answers
    print(f"\nCLUSTER REPORT shell proxy after its node was killed: {answers}; pika client: {seen}")
    assert all(process.poll() is None for process in system.processes.values()), system.log_tails()


def _connected_to(cluster: PrivateCluster, node: PrivateBroker) -> bool:
    connections = cluster.api("connections").json()
    return any(c["node"] == node.node and "RpcClient" in str(c.get("client_properties")) for c in connections)


def _after_the_loss(call) -> dict:
    """``call()``'s result once it answers, and the errors it raised before (at most 10 tries)."""
    errors = []
    for _ in range(10):
        try:
            return {"result": call(), "errors": errors}
        except Exception as exc:  # whatever a lost connection surfaces as: the next try reconnects
            errors.append(type(exc).__name__)
            eventlet.sleep(0.5)
    return {"result": None, "errors": errors}
