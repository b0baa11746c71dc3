"""The broker's view of mensageria's queues, for the console: depth and consumers per queue, from
the RabbitMQ management API (``RABBIT_API_URI``), grouped by the service that consumes them."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

SERVICES = ("students", "status", "certificates", "notifications")
COLUMNS = "name,messages_ready,messages_unacknowledged,consumers"


def vhost_of(amqp_uri: str) -> str:
    """The vhost an AMQP URI names (``/`` when it names none)."""
    path = urlsplit(amqp_uri.split(";")[0]).path
    return requests.utils.unquote(path[1:]) if len(path) > 1 else "/"


def owner(queue: str) -> str | None:
    """The service consuming a queue: ``rpc-status``, ``evt-…--status.handler``, ``status.dead-letters``."""
    for service in SERVICES:
        if queue in (f"rpc-{service}", f"{service}.dead-letters") or f"--{service}." in queue:
            return service
    return None


def read(api_uri: str, vhost: str, timeout: float) -> list[dict[str, Any]]:
    """Every queue of ``vhost``: ``{name, service, ready, unacked, consumers}``, by name.
    Raises ``requests.RequestException`` (or ``ValueError``) when the API cannot say."""
    parts = urlsplit(api_uri)
    auth = (requests.utils.unquote(parts.username or ""), requests.utils.unquote(parts.password or ""))
    base = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))
    response = requests.get(
        f"{base.rstrip('/')}/api/queues/{quote(vhost, safe='')}",
        params={"columns": COLUMNS},
        auth=auth,
        timeout=timeout,
    )
    response.raise_for_status()
    return sorted(
        (
            {
                "name": queue["name"],
                "service": owner(queue["name"]),
                "ready": queue.get("messages_ready") or 0,
                "unacked": queue.get("messages_unacknowledged") or 0,
                "consumers": queue.get("consumers") or 0,
            }
            for queue in response.json()
            if not queue["name"].startswith("rpc.reply-")  # callers' reply queues: not ours to watch
        ),
        key=lambda queue: queue["name"],
    )


def by_service(queues: list[dict]) -> dict[str, dict]:
    """``{service: {"consumers": n, "backlog": ready + unacked}}`` over the service's queues."""
    totals = {service: {"consumers": 0, "backlog": 0} for service in SERVICES}
    for queue in queues:
        if queue["service"] in totals and not queue["name"].endswith(".dead-letters"):
            totals[queue["service"]]["consumers"] += queue["consumers"]
            totals[queue["service"]]["backlog"] += queue["ready"] + queue["unacked"]
    return totals
