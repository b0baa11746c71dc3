"""Two status instances side by side: competing consumers, correct results."""

from __future__ import annotations

from tests.e2e.support import poll, start_process
from tests.faults.support import Workload, assert_nothing_lost

HANDLER_QUEUE = "evt-gateway-status_change_requested--status.handle_status_change_requested"


def test_two_status_instances_share_the_work(make_system, rabbit_manager, unique):
    system = make_system("postgresql")
    system.processes["status-2"] = start_process("services.status", system.env, system.log_path("status-2"))
    vhost = system.env["AMQP_URI"].rsplit("/", 1)[1]
    poll(
        lambda: rabbit_manager.get_queue(vhost, HANDLER_QUEUE).get("consumers", 0), lambda count: count == 2, timeout=30
    )
    poll(
        lambda: rabbit_manager.get_queue(vhost, "rpc-status").get("consumers", 0), lambda count: count == 2, timeout=30
    )

    workload = Workload(system)
    workload.create_students(8, unique)  # few students: the two appliers contend for the same rows
    workload.submit(800, rounds=["active", "suspended"])  # every request a real transition, if in order
    report = workload.audit()

    assert report["accepted"] == 800 and report["history_rows"] > 100, report
    assert_nothing_lost(report)
    assert all(process.poll() is None for process in system.processes.values()), system.log_tails()


def test_two_status_instances_apply_one_bulk_job(make_system, rabbit_manager, unique):
    system = make_system("postgresql", STATUS_BATCH_SIZE="50")  # 40 batches for the two to share
    system.processes["status-2"] = start_process("services.status", system.env, system.log_path("status-2"))
    vhost = system.env["AMQP_URI"].rsplit("/", 1)[1]
    poll(
        lambda: rabbit_manager.get_queue(vhost, "rpc-status").get("consumers", 0), lambda count: count == 2, timeout=30
    )

    workload = Workload(system)
    workload.create_students(40, unique)
    job = workload.submit_job(rows_per_student=50)  # 2,000 rows, 50 transitions per student in row order
    report = workload.audit_job(job["job_id"])

    print(f"\nSCALE-OUT REPORT {report}")
    assert report["state"] == "done" and report["applied"] == job["total"] == 2000, report
    assert (report["rejected"], report["failed"], report["lost"]) == (0, 0, 0), report
    assert report["history_rows"] == 2000 and report["duplicated"] == 0, report
    assert report["chain_errors"] == 0 and report["read_copy_mismatches"] == 0, report
    assert all(process.poll() is None for process in system.processes.values()), system.log_tails()
