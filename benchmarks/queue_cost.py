"""Scenario (q): what a queue of each broker set-up costs the broker.

On RabbitMQ nodes of the run's own (so nothing else shares their memory or disk): one node for
``classic`` and ``quorum``, the run's three-node cluster for ``cluster``. One durable queue of the
set-up's type, declared as mensageria declares its queues (``x-queue-type``); N persistent
messages the size of a ``status_change_requested`` event published into it with confirms (a
window of unconfirmed publishes in flight, as (a)); then, with all N at rest in the queue, the
Erlang memory and the data directories' bytes on disk of every node, each less its value
before the publish; then the N consumed with a manual ack each by a consumer in another process.

Rows: publish→confirmed messages/s, and consume+ack messages/s; the notes carry the memory and
disk per message at rest (a cluster's figures are all three nodes': every message is kept on
each), and the bytes of a message body.
"""

from __future__ import annotations

import json
import time

import pika

from benchmarks.brokers import CLUSTER, BrokerSetup
from benchmarks.core import Context, Row
from benchmarks.cpu import CpuMeter, format_cpu
from benchmarks.raw_pika import QUEUE, PipelinedPublisher, start_consumer
from services.infra.queues import QUORUM
from tools.local_cluster import PrivateCluster, wait_until

SETTLE = 2.0  # seconds for the nodes' memory to settle before and after the publish


def _body(n: int) -> bytes:
    return json.dumps(
        {
            "request_id": f"0196b3c2-7f1e-7a10-9c3d-{n:012d}",
            "student_id": n % 512 + 1,
            "status": "suspended" if n % 2 else "active",
            "reason": "queue cost benchmark",
            "requested_at": "2026-12-05T04:00:00.000000+00:00",
            "correlation_id": f"bench-{n:08d}",
            "idempotency_key": None,
        }
    ).encode()


def queue_cost(ctx: Context, backend: str) -> list[Row]:
    setup: BrokerSetup = ctx.broker_setup
    if setup.name == CLUSTER:
        cluster = setup.cluster
    else:
        cluster = PrivateCluster(1, prefix="mensageria-bench-q")
        ctx.cleanup.push(f"remove the {setup.name} queue-cost node", cluster.remove)
        cluster.start()
    count, window = ctx.sizes.queue_messages, ctx.sizes.raw_window
    amqp_uri = cluster.node_uri(cluster.nodes[0])
    arguments = {"x-queue-type": QUORUM} if setup.queue_type == QUORUM else {}
    with pika.BlockingConnection(pika.URLParameters(amqp_uri)) as connection:
        connection.channel().queue_declare(QUEUE, durable=True, arguments=arguments)
    bodies = [_body(n) for n in range(count)]

    time.sleep(SETTLE)
    memory_before, disk_before = cluster.memory_bytes(), cluster.disk_bytes()
    meter = CpuMeter({"rabbitmq": lambda: [node.pid for node in cluster.alive()]})
    meter.start()
    publisher = PipelinedPublisher(amqp_uri, bodies, window)
    publisher.run()
    publish_cpu = meter.stop()
    if publisher.nacked or publisher.confirmed != count:
        raise RuntimeError(f"queue cost: {publisher.confirmed}/{count} confirmed, {publisher.nacked} nacked")
    wait_until(lambda: cluster.queue(QUEUE).get("messages", 0), lambda n: n == count, timeout=60, interval=0.5)
    time.sleep(SETTLE)
    memory = (cluster.memory_bytes() - memory_before) / count
    disk = (cluster.disk_bytes() - disk_before) / count

    consumer, parent = start_consumer(ctx, amqp_uri, count, window)
    meter.start()
    if not parent.poll(300):
        raise RuntimeError("the queue-cost consumer did not receive every message within 300 s")
    received, first, last = parent.recv()
    consume_cpu = meter.stop()
    consumer.join(10)
    if received != count:
        raise RuntimeError(f"queue cost: {received}/{count} consumed")

    publish_rate = count / (publisher.finished - publisher.started)
    consume_rate = count / (last - first)
    nodes = len(cluster.nodes)
    at_rest = (
        f"{count:,} messages of {len(bodies[0])} B at rest: memory {memory:,.0f} B/message, "
        f"disk {disk:,.0f} B/message ({'one node' if nodes == 1 else f'{nodes} nodes together'})"
    )
    label = setup.label
    return [
        Row(
            "q",
            f"{label} queue: publish, confirmed",
            label,
            1,
            publish_rate,
            count,
            notes=f"{at_rest}; confirm window {window}; {format_cpu(publish_cpu, publish_rate)}",
        ),
        Row(
            "q",
            f"{label} queue: consume, acked",
            label,
            1,
            consume_rate,
            count,
            notes=f"{at_rest}; prefetch {window}; {format_cpu(consume_cpu, consume_rate)}",
        ),
    ]
