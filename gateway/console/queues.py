"""The broker's view of mensageria's queues, for the console: depth and consumers per queue, from
the RabbitMQ management API (``RABBIT_API_URI``: one node's, or several ``;``-separated, asked in
turn until one answers), grouped by the service that consumes them."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import requests

from services.infra import brokers

SERVICES = ("students", "status", "certificates", "notifications")
COLUMNS = "name,messages_ready,messages_unacknowledged,consumers"


def vhost_of(amqp_uri: str) -> str:
    """The vhost an AMQP URI names (``/`` when it names none)."""
    return brokers.vhost(amqp_uri)


def owner(queue: str) -> str | None:
    """The service consuming a queue: ``rpc-status``, ``evt-…--status.handler``, ``status.dead-letters``."""
    for service in SERVICES:
        if queue in (f"rpc-{service}", f"{service}.dead-letters") or f"--{service}." in queue:
            return service
    return None


def read(api_uri: str, vhost: str, timeout: float) -> list[dict[str, Any]]:
    """Every queue of ``vhost``: ``{name, service, ready, unacked, consumers}``, by name, from the
    first node of ``api_uri`` that answers. Raises ``requests.RequestException`` (or ``ValueError``)
    when none can say."""
    uris = [uri.strip() for uri in api_uri.split(brokers.SEPARATOR) if uri.strip()]
    if not uris:
        raise ValueError("RABBIT_API_URI names no management API")
    for uri in uris[:-1]:
        try:
            return _read(uri, vhost, timeout)
        except requests.RequestException:  # that node is away: ask the next
            continue
    return _read(uris[-1], vhost, timeout)


def _read(api_uri: str, vhost: str, timeout: float) -> list[dict[str, Any]]:
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
