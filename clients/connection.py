"""One pika connection per thread, opened on first use and reopened when lost.

A pika ``BlockingConnection`` belongs to the thread that uses it, so a client
shared by many threads (a web server's request threads) keeps one
:class:`Link` — a connection and its publisher-confirm channel — per thread.

A URL may list the nodes of a cluster, ``;``-separated (as ``AMQP_URI`` does)::

    amqp://app:pw@rabbit-1:5672/vhost;amqp://app:pw@rabbit-2:5672/vhost

Every connection, and every reconnection after a node is lost, tries them in
order and keeps the first that answers.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pika
from pika.exceptions import AMQPConnectionError, AMQPError

from clients.errors import BrokerError, BrokerUnavailable

log = logging.getLogger(__name__)

DEFAULT_URL = "amqp://guest:guest@localhost:5672/"


def node_urls(url: str) -> list[str]:
    """The URLs of the nodes ``url`` lists (one, or several ``;``-separated), in order."""
    urls = [part.strip() for part in url.split(";") if part.strip()]
    if not urls:
        raise ValueError("the broker URL names no node")
    return urls


def connection_parameters(url: str, name: str, timeout: float) -> list[pika.URLParameters]:
    """Parameters for each node ``url`` lists (pika tries them in order), named for the
    management UI, with connect and blocked-broker waits bounded by ``timeout`` unless
    the node's URL sets them."""
    return [_node_parameters(node, name, timeout) for node in node_urls(url)]


def _node_parameters(url: str, name: str, timeout: float) -> pika.URLParameters:
    parameters = pika.URLParameters(url)
    parameters.client_properties = {"connection_name": name, "product": "mensageria pika client"}
    given = parse_qs(urlsplit(url).query)
    for option in ("socket_timeout", "stack_timeout", "blocked_connection_timeout"):
        if option not in given:
            setattr(parameters, option, timeout)
    return parameters


def broker_error(exc: AMQPError, doing: str) -> BrokerError:
    """The client error for a pika error: connection-level ones mean the broker is unavailable."""
    kind = BrokerUnavailable if isinstance(exc, AMQPConnectionError) else BrokerError
    return kind(f"{doing}: {exc!r}", {"reason": type(exc).__name__})


def close_quietly(connection: pika.BlockingConnection) -> None:
    try:
        if connection.is_open:
            connection.close()
    except Exception:  # closing a broken connection: nothing left to do
        log.debug("error closing %r", connection, exc_info=True)


class Link:
    """A thread's connection, its channel in confirm mode, and per-link state."""

    def __init__(self, connection: pika.BlockingConnection):
        self.connection = connection
        self.channel = connection.channel()
        self.channel.confirm_delivery()
        self.thread = threading.current_thread()
        self.state: dict[str, Any] = {}

    def alive(self) -> bool:
        """Open, as far as the broker has told us; reads pending frames without waiting."""
        if not (self.connection.is_open and self.channel.is_open):
            return False
        try:
            # a broker restart or a forced close arrives as a frame or EOF: see it before publishing
            self.connection.process_data_events(time_limit=0)
        except AMQPError:
            return False
        return self.connection.is_open and self.channel.is_open

    def close(self) -> None:
        close_quietly(self.connection)


class PerThread:
    """Hands each thread its own :class:`Link`; ``on_open`` prepares a new one
    (declares exchanges and queues) before it is used."""

    def __init__(self, url: str, role: str, timeout: float, on_open: Callable[[Link], None]):
        node_urls(url)  # a URL naming no node fails here, not at the first call
        self.url = url
        self.role = role
        self.timeout = timeout
        self.on_open = on_open
        self._local = threading.local()
        self._lock = threading.Lock()
        self._links: list[Link] = []

    def get(self) -> Link:
        """This thread's link: a live one, or a fresh one (nothing was sent on a dead one)."""
        link: Link | None = getattr(self._local, "link", None)
        if link is not None:
            if link.alive():
                return link
            log.info("%s: connection lost; reconnecting", self.role)
            self.discard()
        self._close_orphans()
        name = f"{self.role} ({threading.current_thread().name})"
        connection = None
        try:
            connection = pika.BlockingConnection(connection_parameters(self.url, name, self.timeout))
            link = Link(connection)
            self.on_open(link)
        except AMQPError as exc:
            if connection is not None:
                close_quietly(connection)
            raise broker_error(exc, f"{self.role}: cannot connect to the broker") from exc
        self._local.link = link
        with self._lock:
            self._links.append(link)
        return link

    def discard(self) -> None:
        """Close and forget this thread's link; the next :meth:`get` opens a new one."""
        link = getattr(self._local, "link", None)
        self._local.link = None
        if link is not None:
            self._forget(link)
            link.close()

    def close(self) -> None:
        """Close this thread's link and those of threads that have ended.

        Links of other live threads are theirs to close (pika connections are
        not thread-safe); they are closed when those threads call ``close()``,
        or by the first ``get()`` after the thread has ended.
        """
        self.discard()
        self._close_orphans()

    def _forget(self, link: Link) -> None:
        with self._lock:
            if link in self._links:
                self._links.remove(link)

    def _close_orphans(self) -> None:
        with self._lock:
            orphans = [link for link in self._links if not link.thread.is_alive()]
            self._links = [link for link in self._links if link not in orphans]
        for link in orphans:  # their threads are gone: nobody else can be using them
            link.close()
