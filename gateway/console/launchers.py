"""The autoscaling launchers' view, for the console: per service, the instances running now and
last decided on, the backlog the launcher saw and its scale events so far, from each launcher's own
``/metrics`` (``tools/autoscale.py``: ``ScaleMetrics``) at
``http://LAUNCHER_METRICS_HOST:METRICS_PORT_LAUNCH_<SERVICE>/metrics``. A launcher that does not
answer in time (port 0, a fixed ``1..1`` service, or one scaled by the platform, e.g. KEDA) is
"not scaled here"; it never fails the page."""

from __future__ import annotations

from typing import Any

import eventlet
import requests
from prometheus_client.parser import text_string_to_metric_families

from gateway.console.queues import SERVICES
from services.infra.metrics import PREFIX
from services.infra.settings import Settings

TIMEOUT = 0.5  # seconds per launcher: a page waits at most this long for all of them
GAUGES = {
    PREFIX + "scale_instances": "instances",
    PREFIX + "scale_desired_instances": "desired",
    PREFIX + "scale_backlog": "backlog",
}
EVENTS = PREFIX + "scale_events_total"
ERRORS = PREFIX + "scale_backlog_errors_total"


def summary(text: str, service: str) -> dict[str, Any] | None:
    """``{instances, desired, backlog, up, down, errors}`` of ``service`` in a launcher's
    ``/metrics`` text (``up``/``down``: scale events counted, any reason; ``errors``: failed looks
    at the backlog); None when the text says nothing of ``service``'s instances."""
    found: dict[str, Any] = {"instances": None, "desired": None, "backlog": None, "up": 0, "down": 0, "errors": 0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("service") != service:
                continue
            if sample.name in GAUGES:
                found[GAUGES[sample.name]] = int(sample.value)
            elif sample.name == EVENTS and sample.labels.get("direction") in ("up", "down"):
                found[sample.labels["direction"]] += int(sample.value)
            elif sample.name == ERRORS:
                found["errors"] += int(sample.value)
    return found if found["instances"] is not None else None


def read(host: str, port: int, service: str, timeout: float = TIMEOUT) -> dict[str, Any] | None:
    """:func:`summary` of the launcher at ``host:port``; None for port 0, or one that does not
    answer in ``timeout`` seconds, answers with an error or with no scaling metrics of ``service``."""
    if not port:
        return None
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        response = requests.get(f"http://{netloc}/metrics", timeout=timeout)
        response.raise_for_status()
        return summary(response.text, service)
    except (requests.RequestException, ValueError):  # away, or not a launcher's /metrics: not scaled here
        return None


def read_all(settings: Settings, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """One row per scalable service, all launchers asked at once: ``{name, range, scaled, ...}``
    (``range``: its ``SCALE_<SERVICE>`` here; the rest from :func:`summary` when ``scaled``)."""
    host = settings.launcher_metrics_host

    def row(name: str) -> dict[str, Any]:
        found = read(host, getattr(settings, f"metrics_port_launch_{name}"), name, timeout)
        return {"name": name, "range": getattr(settings, f"scale_{name}"), "scaled": found is not None, **(found or {})}

    return list(eventlet.GreenPool(len(SERVICES)).imap(row, SERVICES))
