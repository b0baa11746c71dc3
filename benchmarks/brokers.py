"""The broker set-ups a run can measure the system on (``--brokers``).

- ``quorum``: the shared RabbitMQ node, every durable queue a quorum queue (``QUEUE_TYPE=quorum``,
  the default: what ``make run`` does);
- ``classic``: the same node, classic queues (``QUEUE_TYPE=classic``);
- ``cluster``: three RabbitMQ nodes of the run's own (``tools.local_cluster``, started once, removed
  at the end), quorum queues replicated on all three, every process given all three nodes.

A set-up makes the vhosts of a run's system (``vhost_uri``: one node's URI, or every node's,
``;``-separated, as ``AMQP_URI`` takes them), says which RabbitMQ processes the CPU meter counts,
and which queue type the system's processes are told to declare.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from benchmarks.cpu import rabbitmq_pids
from benchmarks.infra import Broker, Cleanup
from services.infra import brokers
from services.infra.queues import CLASSIC, QUORUM
from tools.local_cluster import PrivateCluster

DEFAULT = "quorum"
CLUSTER = "cluster"
SETUPS = (QUORUM, CLASSIC, CLUSTER)
CLUSTER_SIZE = 3
LABELS = {QUORUM: "quorum", CLASSIC: "classic", CLUSTER: f"quorum x{CLUSTER_SIZE}"}


@dataclass
class BrokerSetup:
    name: str  # one of SETUPS
    queue_type: str  # what QUEUE_TYPE the system's processes get
    broker: Broker  # where its vhosts are made (a cluster's first node: any node makes them for all)
    node_roots: tuple[str, ...]  # every node's AMQP URI without a vhost
    rabbit_pids: Callable[[], list[int]]
    cluster: PrivateCluster | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return LABELS[self.name]

    def vhost_uri(self, cleanup: Cleanup, purpose: str) -> str:
        """A fresh vhost (deleted by ``cleanup``), as ``AMQP_URI`` names it: every node of the set-up."""
        uri = self.broker.create_vhost(cleanup, purpose)
        vhost = urlsplit(uri).path.lstrip("/")
        return brokers.SEPARATOR.join(f"{root.rstrip('/')}/{vhost}" for root in self.node_roots)

    @classmethod
    def shared(cls, name: str, broker: Broker) -> BrokerSetup:
        return cls(name, name, broker, (broker.amqp_uri,), rabbitmq_pids)

    @classmethod
    def private_cluster(cls, cleanup: Cleanup) -> BrokerSetup:
        cluster = PrivateCluster(CLUSTER_SIZE, prefix="mensageria-bench")
        cleanup.push("remove the benchmark's RabbitMQ cluster", cluster.remove)
        cluster.start()
        first = cluster.nodes[0]
        return cls(
            CLUSTER,
            QUORUM,
            Broker(first.amqp_uri, first.api_uri),
            tuple(node.amqp_uri for node in cluster.nodes),
            lambda: [node.pid for node in cluster.alive()],
            cluster,
        )


def parse(value: str) -> tuple[str, ...]:
    """``--brokers`` as a tuple of set-up names; ``ValueError`` names what is unknown."""
    names = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    unknown = [name for name in names if name not in SETUPS]
    if unknown or not names:
        raise ValueError(f"unknown broker set-ups {unknown}; choose from {', '.join(SETUPS)}")
    return names


class BrokerSetups:
    """The run's set-ups, made when first asked for (a cluster takes ~20 s to start)."""

    def __init__(self, broker: Broker, cleanup: Cleanup):
        self.broker, self.cleanup = broker, cleanup
        self._made: dict[str, BrokerSetup] = {}

    def get(self, name: str) -> BrokerSetup:
        if name not in self._made:
            if name == CLUSTER:
                self._made[name] = BrokerSetup.private_cluster(self.cleanup)
            else:
                self._made[name] = BrokerSetup.shared(name, self.broker)
        return self._made[name]
