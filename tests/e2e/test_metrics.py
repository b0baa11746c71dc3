"""Every process serves Prometheus metrics: a status change and a course completion driven over
HTTP move the counters of the gateway and of the four services, with bounded labels (no ids), and
every metric the dashboard reads and the Prometheus config scrapes exists on the running system."""

from __future__ import annotations

import re

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.support import MODULES, System, poll
from tests.unit.test_metrics import BOUNDED_LABELS
from tests.unit.test_monitoring import dashboard_metrics, family_of, scrape_targets

Scrape = dict[str, dict[str, Metric]]  # process -> family name -> family

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
NUMERIC_LABELS = {"http_response_status_code", "le"}


def scrape(system: System) -> Scrape:
    return {
        name: {family.name: family for family in text_string_to_metric_families(system.metrics(name))}
        for name in MODULES
    }


def value(scraped: Scrape, process: str, name: str, **labels: str) -> float:
    """The sum of the samples ``name`` of ``process`` whose labels include ``labels``."""
    return sum(
        s.value
        for family in scraped[process].values()
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    )


def moved(before: Scrape, after: Scrape, process: str, name: str, **labels: str) -> float:
    return value(after, process, name, **labels) - value(before, process, name, **labels)


def test_a_status_change_and_a_completion_move_every_process(system: System, unique: str) -> None:
    before = scrape(system)
    student = system.create_student(unique)
    changed = system.request_status(student["id"], "active", "term starts")
    assert system.settled_request(changed["request_id"])["state"] == "applied"
    completion = system.post(f"/students/{student['id']}/completion", json={})
    assert completion.status_code == 202, completion.text
    assert system.settled_request(completion.json()["request_id"])["state"] == "applied"
    poll(lambda: system.get(f"/students/{student['id']}/certificates").json(), lambda found: len(found) == 1)
    # three mails: two status changes and the certificate (sent after their events, by the sender loop)
    poll(
        lambda: moved(before, scrape(system), "notifications", "mensageria_mail_send_attempts_total", outcome="sent"),
        lambda sent: sent >= 3,
        timeout=30,
    )
    after = scrape(system)

    def check(process: str, name: str, **labels: str) -> None:
        assert moved(before, after, process, name, **labels) >= 1, (process, name, labels)

    http = "mensageria_http_server_request_duration_seconds_count"
    check("gateway", http, http_request_method="POST", http_route="/students", http_response_status_code="201")
    for route in ("/students/{student_id}/status", "/students/{student_id}/completion"):
        check("gateway", http, http_request_method="POST", http_route=route, http_response_status_code="202")
    check("gateway", "mensageria_http_server_request_duration_seconds_bucket", http_route="/students", le="+Inf")
    rpc_made = "mensageria_rpc_client_call_duration_seconds_count"
    check("gateway", rpc_made, rpc_service="students", rpc_method="create_student", outcome="ok")
    sent = "mensageria_messaging_client_sent_messages_total"
    check("gateway", sent, messaging_destination_name="gateway.events", outcome="ok")
    check(
        "gateway",
        "mensageria_messaging_client_operation_duration_seconds_count",
        messaging_operation_name="publish",
        messaging_destination_name="gateway.events",
    )

    served = "mensageria_rpc_server_call_duration_seconds_count"
    consumed = "mensageria_messaging_client_consumed_messages_total"
    processed = "mensageria_messaging_process_duration_seconds_count"
    check("students", served, rpc_service="students", rpc_method="create_student", outcome="ok")
    check("students", sent, messaging_destination_name="students.events", outcome="ok")
    check("students", consumed, service="students", handler="handle_student_status_changed", outcome="acked")

    check("status", consumed, service="status", handler="handle_status_change_requested", outcome="acked")
    check("status", processed, service="status", handler="handle_status_change_requested", outcome="ok")
    assert moved(before, after, "status", "mensageria_status_requests_recorded_total") >= 2
    assert moved(before, after, "status", "mensageria_status_requests_applied_total") >= 2
    check("status", "mensageria_status_apply_batch_size_count")
    check("status", sent, messaging_destination_name="status.events", outcome="ok")

    check("certificates", "mensageria_certificates_issued_total")
    check("certificates", consumed, service="certificates", handler="handle_student_status_changed", outcome="acked")
    check("certificates", rpc_made, rpc_service="students", rpc_method="get_students", outcome="ok")
    check("certificates", sent, messaging_destination_name="certificates.events", outcome="ok")

    check("notifications", consumed, service="notifications", handler="handle_certificate_issued", outcome="acked")
    check("notifications", rpc_made, rpc_service="certificates", rpc_method="get_certificate_files", outcome="ok")

    # gauges read at scrape time, from each service's database and the broker
    for service in ("students", "status", "certificates", "notifications"):
        assert value(after, service, "mensageria_dead_letters", service=service) == 0, service
    for service in ("students", "status", "certificates"):
        assert "mensageria_outbox_pending_rows" in after[service], service
        assert value(after, service, "mensageria_outbox_oldest_pending_age_seconds") < 60, service
    for name in ("mensageria_status_pending_requests", "mensageria_status_running_jobs", "mensageria_status_job_rows"):
        assert name in after["status"], name
    assert {s.labels["state"] for s in after["notifications"]["mensageria_mail_notifications"].samples} == {
        "pending",
        "failed",
    }
    assert_no_ids(after, unique, student["id"])


def assert_no_ids(scraped: Scrape, unique: str, student_id: int) -> None:
    """Label values are names, codes and routes: never an id, an e-mail or anything a request carried."""
    for process, families in scraped.items():
        for family in families.values():
            if not family.name.startswith("mensageria_"):
                continue
            for s in family.samples:
                assert set(s.labels) <= BOUNDED_LABELS | {"le"}, (process, s)
                for label, text in s.labels.items():
                    assert unique not in text and "@" not in text and not UUID.search(text), (process, s)
                    assert label in NUMERIC_LABELS or not text.isdigit(), (process, s)
                    assert text != str(student_id) or label in NUMERIC_LABELS, (process, s)


def test_every_metric_of_the_dashboard_and_every_scraped_process_is_on_the_running_system(system: System) -> None:
    assert set(scrape_targets()) == set(MODULES)  # Prometheus scrapes each process there is
    scraped = scrape(system)
    present = {name for families in scraped.values() for name in families}
    series = {s.name for families in scraped.values() for family in families.values() for s in family.samples}
    missing = sorted(name for name in dashboard_metrics() if family_of(name) not in present and name not in series)
    assert missing == []
    for process, families in scraped.items():
        assert "process_cpu_seconds" in families, process
        assert any(name.startswith("mensageria_") for name in families), process
