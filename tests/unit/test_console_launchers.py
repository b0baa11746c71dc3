"""The console's Instances panel: a scaling launcher's real ``/metrics`` (``ScaleMetrics`` served by
prometheus_client) read into one row per service, a launcher that is not there shown as not scaled
here, and the overview rendering both, escaped."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from prometheus_client import generate_latest, start_http_server

from gateway.console import launchers
from gateway.console.entrypoint import templates
from services.infra.settings import Settings
from tools.autoscale import ScaleMetrics

NOT_SCALED = "not scaled here (fixed or scaled by the platform, e.g. KEDA)"


def notifications_launcher() -> ScaleMetrics:
    """A notifications launcher's metrics after two steps up, one down and a failed look."""
    metrics = ScaleMetrics()
    metrics.instances.labels("notifications").set(3)
    metrics.desired.labels("notifications").set(4)
    metrics.backlog.labels("notifications").set(803)
    metrics.events.labels("notifications", "up", "backlog").inc(2)
    metrics.events.labels("notifications", "down", "backlog").inc()
    metrics.errors.labels("notifications").inc()
    return metrics


@pytest.fixture(scope="module")
def served() -> Iterator[int]:
    """The launcher's registry on a real /metrics endpoint; its port."""
    server, thread = start_http_server(0, addr="127.0.0.1", registry=notifications_launcher().registry)
    yield server.server_port
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def refusing() -> Iterator[int]:
    """A port bound but not listening: connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def test_a_launcher_s_metrics_summed_for_its_service_only():
    text = generate_latest(notifications_launcher().registry).decode()
    assert launchers.summary(text, "notifications") == {
        "instances": 3,
        "desired": 4,
        "backlog": 803,
        "up": 2,
        "down": 1,
        "errors": 1,
    }
    assert launchers.summary(text, "certificates") is None  # another service's launcher says nothing of it
    assert launchers.summary("", "notifications") is None


def test_a_launcher_is_read_over_http_and_one_that_is_not_there_is_not_scaled(served, refusing):
    assert launchers.read("127.0.0.1", served, "notifications")["instances"] == 3
    assert launchers.read("127.0.0.1", refusing, "notifications") is None
    assert launchers.read("127.0.0.1", 0, "notifications") is None


def test_the_overview_shows_each_service_s_instances_or_that_it_is_not_scaled_here(served, refusing):
    settings = Settings.from_config(
        {
            "METRICS_PORT_LAUNCH_NOTIFICATIONS": served,
            "METRICS_PORT_LAUNCH_CERTIFICATES": refusing,
            "METRICS_PORT_LAUNCH_STATUS": 0,
            "METRICS_PORT_LAUNCH_STUDENTS": served,  # answers, but of notifications only
            "SCALE_NOTIFICATIONS": "1..4",
            "SCALE_CERTIFICATES": "<b>1..4</b>",  # whatever a setting holds is shown as text
        }
    )
    rows = {row["name"]: row for row in launchers.read_all(settings)}
    assert rows["notifications"] == {
        "name": "notifications",
        "range": "1..4",
        "scaled": True,
        **launchers.summary(generate_latest(notifications_launcher().registry).decode(), "notifications"),
    }
    assert [name for name, row in rows.items() if not row["scaled"]] == ["students", "status", "certificates"]

    page = templates.get_template("overview.html").render(
        path="/ops",
        services=[],
        status={"ok": False},
        mail={"ok": False},
        dead_letters=[],
        queues=None,
        instances=list(rows.values()),
    )
    panel = page.split("<h2>Instances</h2>")[1].split("</table>")[0]
    assert '<td>notifications</td><td>3</td><td>4</td><td class="mono">1..4</td>' in panel
    assert '803 <span class="bad">(1 failed looks)</span></td><td>2</td><td>1</td>' in panel
    assert panel.count(NOT_SCALED) == 3
    assert "&lt;b&gt;1..4&lt;/b&gt;" in panel and "<b>" not in panel
