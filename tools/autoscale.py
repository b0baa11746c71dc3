"""How many instances of a service to run: the decision (a pure function) and its inputs.

``tools.launch`` runs a service with ``SCALE_<SERVICE>=MIN..MAX`` instances; every
``SCALE_INTERVAL`` seconds it reads the service's backlog and asks :func:`decide`::

    policy = Policy.for_service("notifications", config)        # ConfigError naming a bad key
    desired = decide(current=2, backlog=57, history=window.recent(now), settings=policy)

- **Backlog**: ready + unacknowledged messages on the service's own queues (named by
  ``services.infra.topology``), from one call to the RabbitMQ management API (``RABBIT_API_URI``);
  without it, a passive declare of each queue (ready only) plus what the launcher knows: a
  queue with messages waiting keeps every consumer's prefetch (``max_workers``) in hand. A
  service whose slow work waits in its database rather than in a queue adds that count too
  (notifications: its pending mails, from its own ``/metrics``).
- **Arithmetic** (Kubernetes HPA / KEDA): ``ceil(backlog / target)``, ``target`` = the service's
  ``max_workers`` (or ``SCALE_TARGET``); within ``TOLERANCE`` of the current size nothing changes.
- **Up** at once, by at most x2 or +4 a step (the larger); **down** only to the highest
  recommendation of the last ``SCALE_KEEP_ALIVE`` seconds (HPA's stabilization window), so a
  drop must last that long; always within ``MIN..MAX``.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
import warnings
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

import requests
from kombu import Connection
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.infra import brokers
from services.infra.config import load_config
from services.infra.settings import ConfigError, Settings
from services.infra.topology import SUBSCRIPTIONS, rpc_queue

with warnings.catch_warnings():  # keep eventlet's notice (metrics' WSGI server) off the launcher's output
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    from services.infra.metrics import MAIL_NOTIFICATIONS, PREFIX

SCALABLE = ("students", "status", "certificates", "notifications")
# services whose instances may share one SQLite file: notifications' senders claim mails under the
# database's write lock (repo.claim_due), and its handlers record each mail once by a unique key
SQLITE_SHARED = ("notifications",)
TOLERANCE = 0.1  # HPA's default: a backlog within 10% of what the current size is meant to hold changes nothing
STEP_FACTOR, STEP_ADD = 2, 4  # at most x2 or +4 instances in one step up, whichever is more
HTTP_TIMEOUT = 2.0
_RANGE = re.compile(r"^\s*(\d+)\s*\.\.\s*(\d+)\s*$")

# work a service holds outside its queues, read from its own /metrics (the sample's text)
WORK_GAUGES = {"notifications": f'{MAIL_NOTIFICATIONS.name}{{state="pending"}}'}


def scale_range(key: str, raw: str) -> tuple[int, int]:
    """``"1..4"`` as ``(1, 4)``; ConfigError naming ``key`` unless ``1 <= MIN <= MAX``."""
    match = _RANGE.match(str(raw))
    low, high = (int(match[1]), int(match[2])) if match else (0, 0)
    if not match or not 1 <= low <= high:
        raise ConfigError(f"config: {key} must be MIN..MAX instances with 1 <= MIN <= MAX (e.g. 1..4), got {raw!r}")
    return low, high


@dataclass(frozen=True)
class Policy:
    """One service's scaling settings."""

    minimum: int = 1
    maximum: int = 1
    target: int = 10  # backlog one instance is meant to hold
    keep_alive: float = 30.0
    tolerance: float = TOLERANCE

    @classmethod
    def for_service(cls, service: str, config: dict) -> Policy:
        settings = Settings.from_config(config)
        raw = getattr(settings, f"scale_{service}", "1..1")
        low, high = scale_range(f"SCALE_{service.upper()}", raw)
        if high > 1 and service not in SQLITE_SHARED and _is_sqlite(config, service):
            raise ConfigError(
                f"config: SCALE_{service.upper()}={raw} needs PostgreSQL: {service.upper()}_DB_URI is SQLite, "
                "which one instance at a time uses safely (set 1..1, or a PostgreSQL URI)"
            )
        target = settings.scale_target or int(config.get("max_workers") or 10)
        return cls(low, high, max(target, 1), settings.scale_keep_alive)


def _is_sqlite(config: dict, service: str) -> bool:
    uris = [uri for key, uri in (config.get("DB_URIS") or {}).items() if key.split(":")[0] == service]
    return any(str(uri).startswith("sqlite") for uri in uris)


def recommend(current: int, backlog: float, settings: Policy) -> int:
    """``ceil(backlog / target)``, or ``current`` while the backlog is within the tolerance of
    what ``current`` instances are meant to hold."""
    if current > 0 and abs(backlog / (current * settings.target) - 1) <= settings.tolerance:
        return current
    return math.ceil(backlog / settings.target)


def decide(current: int, backlog: float, history: Sequence[int], settings: Policy) -> int:
    """How many instances to run, from ``current``, the ``backlog`` now and ``history``: the
    recommendations of the last ``settings.keep_alive`` seconds (see :class:`Window`)::

        decide(1, 400, [], Policy(1, 4, target=10))       # 4: up at once (cap: max(x2, +4))
        decide(4, 0, [4, 4, 1], Policy(1, 4, target=10))  # 4: a 4 within the keep-alive
        decide(4, 0, [1, 0], Policy(1, 4, target=10))     # 1: every recent recommendation lower
    """
    wanted = recommend(current, backlog, settings)
    if wanted > current:
        desired = min(wanted, max(current * STEP_FACTOR, current + STEP_ADD))
    else:
        desired = max([wanted, *history])
        desired = min(desired, current)
    return max(settings.minimum, min(settings.maximum, desired))


class Window:
    """The recommendations of the last ``seconds``, for :func:`decide`'s ``history``."""

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.samples: deque[tuple[float, int]] = deque()

    def add(self, now: float, recommendation: int) -> None:
        self.samples.append((now, recommendation))

    def recent(self, now: float) -> list[int]:
        while self.samples and self.samples[0][0] < now - self.seconds:
            self.samples.popleft()
        return [recommendation for _, recommendation in self.samples]


# --- the backlog ---------------------------------------------------------------------------------


def service_of(modules: Iterable[str]) -> str | None:
    """The scalable service ``tools.launch`` runs (``services.notifications`` → notifications),
    or None: several modules, or one that is not a scalable service (the gateway listens on a port)."""
    modules = list(modules)
    name = modules[0].rsplit(".", 1)[-1] if len(modules) == 1 else None
    return name if name in SCALABLE and modules[0] == f"services.{name}" else None


def queue_names(service: str, config: dict) -> list[str]:
    """The queues ``service``'s workers consume: ``rpc-<service>`` and its event handlers' queues."""
    return [rpc_queue(service, config).name, *(sub.queue_name for sub in SUBSCRIPTIONS if sub.service == service)]


@dataclass(frozen=True)
class Backlog:
    messages: int  # ready + unacknowledged on the service's queues
    work: int  # held outside the queues (notifications: pending mails)
    consumers: int
    utilisation: float | None  # the broker's consumer utilisation (0..1), when the API says

    @property
    def total(self) -> int:
        return self.messages + self.work


class BacklogReader:
    """Reads a service's backlog, cheaply: one HTTP request for all of its queues (a kept-alive
    session), or one kept AMQP connection for passive declares; plus its work gauge."""

    def __init__(self, service: str, config: dict, instances_prefetch: int):
        settings = Settings.from_config(config)
        self.queues = set(queue_names(service, config))
        self.vhost = brokers.vhost(config["AMQP_URI"])
        self.amqp_uri = config["AMQP_URI"]
        self.api_uris = [u.strip() for u in (settings.rabbit_api_uri or "").split(brokers.SEPARATOR) if u.strip()]
        self.prefetch = instances_prefetch
        port = getattr(settings, f"metrics_port_{service}", 0)
        self.work_url = f"http://127.0.0.1:{port}/metrics" if port and service in WORK_GAUGES else None
        self.work_sample = WORK_GAUGES.get(service, "")
        self.http = requests.Session()
        self.connection: Connection | None = None

    def read(self, instances: int) -> Backlog:
        """Raises ``requests.RequestException`` or an AMQP error when the broker cannot say."""
        messages, consumers, utilisation = self._from_api() if self.api_uris else self._from_declares(instances)
        return Backlog(messages, self._work(), consumers, utilisation)

    def _from_api(self) -> tuple[int, int, float | None]:
        error: Exception | None = None
        for uri in self.api_uris:  # a cluster: the first node that answers
            try:
                return self._api_totals(uri)
            except requests.RequestException as exc:
                error = exc
        raise error

    def _api_totals(self, api_uri: str) -> tuple[int, int, float | None]:
        parts = urlsplit(api_uri)
        auth = (requests.utils.unquote(parts.username or ""), requests.utils.unquote(parts.password or ""))
        base = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""), parts.path, "", ""))
        response = self.http.get(
            f"{base.rstrip('/')}/api/queues/{quote(self.vhost, safe='')}",
            params={"columns": "name,messages_ready,messages_unacknowledged,consumers,consumer_utilisation"},
            auth=auth,
            timeout=HTTP_TIMEOUT,
        )
        response.raise_for_status()
        ours = [queue for queue in response.json() if queue["name"] in self.queues]
        messages = sum((q.get("messages_ready") or 0) + (q.get("messages_unacknowledged") or 0) for q in ours)
        used = [q["consumer_utilisation"] for q in ours if q.get("consumer_utilisation") is not None]
        return messages, sum(q.get("consumers") or 0 for q in ours), (max(used) if used else None)

    def _from_declares(self, instances: int) -> tuple[int, int, None]:
        if self.connection is None:
            self.connection = Connection(self.amqp_uri, connect_timeout=HTTP_TIMEOUT)
        try:
            channel = self.connection.default_channel
            ready = consumers = 0
            for name in self.queues:
                declared = channel.queue_declare(name, passive=True)
                ready, consumers = ready + declared.message_count, consumers + declared.consumer_count
        except Exception:
            self.close()  # a fresh connection next time (a passive declare of a missing queue closes the channel)
            raise
        # messages waiting: every instance's prefetch is full too (unacknowledged, not counted by a declare)
        return ready + (instances * self.prefetch if ready else 0), consumers, None

    def _work(self) -> int:
        if self.work_url is None:
            return 0
        try:
            text = self.http.get(self.work_url, timeout=HTTP_TIMEOUT).text
        except requests.RequestException:  # its first instance is (re)starting: the queues alone
            return 0
        for line in text.splitlines():
            if line.startswith(self.work_sample):
                return int(float(line.rsplit(" ", 1)[1]))
        return 0

    def close(self) -> None:
        if self.connection is not None:
            self.connection.release()
            self.connection = None


# --- the launcher's own metrics --------------------------------------------------------------------


class ScaleMetrics:
    """``/metrics`` of a scaling launcher: its instances, the backlog it saw, and its scale events."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.instances = Gauge(
            PREFIX + "scale_instances", "Instances of the service running now.", ("service",), registry=self.registry
        )
        self.desired = Gauge(
            PREFIX + "scale_desired_instances", "Instances last decided on.", ("service",), registry=self.registry
        )
        self.backlog = Gauge(
            PREFIX + "scale_backlog",
            "The service's backlog at the last look: messages on its queues plus work held outside them.",
            ("service",),
            registry=self.registry,
        )
        self.events = Counter(
            PREFIX + "scale_events",
            "Changes of the number of instances, by direction (up, down) and reason.",
            ("service", "direction", "reason"),
            registry=self.registry,
        )
        self.errors = Counter(
            PREFIX + "scale_backlog_errors",
            "Looks at the backlog that failed (broker or management API away): no decision then.",
            ("service",),
            registry=self.registry,
        )


def main() -> None:
    """``python -m tools.autoscale check [--config config.yaml]``: every ``SCALE_<SERVICE>`` usable,
    or one line naming the first that is not (``make run`` checks before it starts anything)."""
    parser = argparse.ArgumentParser(prog="python -m tools.autoscale", description=main.__doc__.splitlines()[0])
    parser.add_argument("command", choices=["check"])
    parser.add_argument("--config", default="config.yaml")
    args = parser.parse_args()
    config = load_config(args.config)
    try:
        for service in SCALABLE:
            Policy.for_service(service, config)
    except ConfigError as error:
        sys.exit(f"mensageria: {error}")


if __name__ == "__main__":
    main()
