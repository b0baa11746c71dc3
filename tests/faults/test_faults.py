"""Nothing accepted is lost or applied twice, whatever breaks mid-run.

Each test reports its counts (submitted, accepted, applied, rejected, lost,
duplicated) on a ``FAULT REPORT`` line; run with ``-s`` to see them.
"""

from __future__ import annotations

import signal
import subprocess

import eventlet
import pytest
from sqlalchemy import create_engine, text

from tests.e2e.support import poll, start_process, stop_processes
from tests.faults.support import Workload, assert_nothing_lost
from tools.local_cluster import PrivateBroker, port_open

TOTAL = 2000
STUDENTS = 200


def kill_and_restart(system, name: str, pause: float = 1.0) -> None:
    process = system.processes[name]
    process.send_signal(signal.SIGKILL)
    process.wait()
    eventlet.sleep(pause)
    system.processes[name] = start_process(
        {"status": "services.status", "students": "services.students"}[name], system.env, system.log_path(name)
    )


def test_status_service_killed_mid_run(make_system, unique):
    system = make_system("sqlite")
    workload = Workload(system)
    workload.create_students(STUDENTS, unique)
    killed = []

    def on_progress(accepted: int) -> None:
        if accepted >= TOTAL // 2 and not killed:
            killed.append(accepted)
            eventlet.spawn(kill_and_restart, system, "status")

    workload.submit(TOTAL, on_progress=on_progress)
    report = workload.audit()
    assert killed, "the status service was killed mid-run"
    assert report["accepted"] == TOTAL, report  # the gateway kept accepting while status was down
    assert_nothing_lost(report)


def test_broker_restarted_mid_run(make_system, unique):
    broker = PrivateBroker(port=_free_port(), dist_port=_free_port())
    systems = []
    try:
        # started before the broker: the services wait for it, one log line per attempt
        system = make_system("sqlite", amqp_uri=broker.amqp_uri, supervised=True, wait=False)
        systems.append(system)
        poll(lambda: system.log_path("status").read_text(), lambda log: "not reachable (attempt 2)" in log)
        broker.start()
        system.wait_ready(timeout=90)
        workload = Workload(system)
        workload.create_students(STUDENTS // 2, unique)
        restarted = []

        def on_progress(accepted: int) -> None:
            if accepted >= TOTAL // 3 and not restarted:
                restarted.append(accepted)
                eventlet.spawn(_restart, broker)

        workload.submit(TOTAL, on_progress=on_progress)
        assert restarted
        poll_ready(system)
        report = workload.audit()
        assert report["accepted"] > 0 and set(report["refused"]) <= {503, 504, "no answer"}, report
        assert_nothing_lost(report)
    finally:
        for system in systems:  # before their broker goes: a stop needs it
            stop_processes(system.processes)
        broker.remove()


def test_postgres_connections_cut_mid_run(make_system, unique):
    system = make_system("postgresql")
    workload = Workload(system)
    workload.create_students(STUDENTS // 2, unique)
    # the gateway's own database too: every accepted change waits for its audit entry's commit
    databases = [system.env[f"{name}_DB_URI"].rsplit("/", 1)[1] for name in ("STUDENTS", "STATUS", "GATEWAY")]
    cuts = []

    def cut() -> None:
        from tests.conftest import pg_admin_uri

        engine = create_engine(pg_admin_uri(), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            for _ in range(3):
                killed = connection.execute(
                    text(
                        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                        "WHERE datname = ANY(:names) AND pid <> pg_backend_pid()"
                    ),
                    {"names": databases},
                ).scalar()
                cuts.append(killed)
                eventlet.sleep(0.5)
        engine.dispose()

    def on_progress(accepted: int) -> None:
        if accepted >= TOTAL // 3 and not cuts:
            cuts.append(0)
            eventlet.spawn(cut)

    workload.submit(TOTAL, on_progress=on_progress)
    report = workload.audit()
    assert sum(cuts) > 0, "connections were cut"
    assert_nothing_lost(report)


def _restart(broker: PrivateBroker) -> None:
    broker.stop()
    eventlet.sleep(1)
    broker.start()


def _free_port() -> int:
    from tests.e2e.support import free_port

    port = free_port()
    assert not port_open(port)
    return port


def poll_ready(system) -> None:
    system.wait_ready(timeout=90)


@pytest.fixture(autouse=True)
def _rabbitmq_cli_available():
    if subprocess.run(["which", "rabbitmqctl"], capture_output=True).returncode != 0:
        pytest.fail("rabbitmqctl is needed to run a private broker node")


def test_bulk_job_survives_a_status_restart_mid_job(make_system, unique):
    """A 5,000-row job; the status service is SIGKILLed as soon as the job is
    accepted (rows still pending, some being applied) and started again. Batches of 50
    keep the job being applied for a while (the default applies 5,000 rows in three)."""
    system = make_system("sqlite", STATUS_BATCH_SIZE="50")
    workload = Workload(system)
    workload.create_students(STUDENTS, unique)
    job = workload.submit_job(rows_per_student=25)
    assert job["total"] == 25 * STUDENTS, job

    status = system.processes["status"]
    status.send_signal(signal.SIGKILL)
    status.wait()
    engine = create_engine(system.env["STATUS_DB_URI"])
    with engine.connect() as connection:
        pending_at_kill = connection.scalar(
            text("SELECT count(*) FROM status_requests WHERE job_id = :job AND state = 'pending'"),
            {"job": job["job_id"]},
        )
    engine.dispose()
    system.processes["status"] = start_process("services.status", system.env, system.log_path("status"))
    report = workload.audit_job(job["job_id"])

    print(f"\nFAULT REPORT bulk job, status killed with {pending_at_kill} rows pending: {report}")
    assert pending_at_kill > 0, "the job was still being applied when status was killed"
    assert report["state"] == "done" and report["applied"] == job["total"], report
    assert (report["rejected"], report["failed"], report["lost"]) == (0, 0, 0), report
    assert report["history_rows"] == job["total"] and report["duplicated"] == 0, report
    assert report["chain_errors"] == 0 and report["read_copy_mismatches"] == 0, report
