"""``AMQP_URI`` naming one RabbitMQ node or several: the nodes of a cluster, in order.

Several nodes are one URI each, joined by ``;`` (kombu's failover syntax, which nameko's
connections, publishers and consumers pass on to kombu unchanged)::

    AMQP_URI=amqp://app:pw@rabbit-1:5672/mensageria;amqp://app:pw@rabbit-2:5672/mensageria;...

A process connects to the first node that answers and, when that node goes away, to the
next. Every node must name the same user and vhost: they are one broker to the system.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit

from kombu import Connection

SEPARATOR = ";"


def nodes(amqp_uri: str) -> list[str]:
    """The URIs of the nodes ``amqp_uri`` lists, in order.

    Raises ``ValueError`` when it lists none, or nodes that disagree on the user or the vhost.
    """
    found = [part.strip() for part in amqp_uri.split(SEPARATOR) if part.strip()]
    if not found:
        raise ValueError("AMQP_URI names no broker node")
    identities = {_identity(node) for node in found}
    if len(identities) > 1:
        raise ValueError(f"the nodes in AMQP_URI name different users or vhosts: {redacted(amqp_uri)}")
    return found


def vhost(amqp_uri: str) -> str:
    """The vhost the nodes name (``/`` when they name none)."""
    return _identity(nodes(amqp_uri)[0])[1]


def redacted(amqp_uri: str) -> str:
    """``amqp_uri`` with each node's password masked, for messages."""
    return SEPARATOR.join(_redacted_node(node) for node in amqp_uri.split(SEPARATOR) if node.strip())


def node_reachable(node: str, timeout: float = 3.0) -> bool:
    """One connection attempt to one node (AMQP handshake and login included)."""
    try:
        with Connection(node, connect_timeout=timeout) as connection:
            connection.ensure_connection(max_retries=0)
        return True
    except Exception:
        return False


def first_reachable(amqp_uri: str, timeout: float = 3.0) -> str | None:
    """The first node of ``amqp_uri`` that accepts a connection, or None if none does."""
    return next((node for node in nodes(amqp_uri) if node_reachable(node, timeout)), None)


def _identity(node: str) -> tuple[str, str]:
    parts = urlsplit(node.strip())
    path = parts.path[1:] if len(parts.path) > 1 else ""
    return unquote(parts.username or ""), unquote(path) if path else "/"


def _redacted_node(node: str) -> str:
    scheme, _, rest = node.strip().partition("://")
    credentials, at, host = rest.rpartition("@")
    return f"{scheme}://{credentials.split(':')[0]}:***@{host}" if at else node.strip()
