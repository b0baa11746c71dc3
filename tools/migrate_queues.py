"""Move mensageria's durable queues to the type ``QUEUE_TYPE`` names, without losing a message.

python -m tools.migrate_queues [--config config.yaml] [--amqp-uri URI] [--api-uri URI] [--dry-run]

RabbitMQ cannot change a queue's type, nor any of its arguments, in place; the services declare
their queues with ``QUEUE_TYPE``'s arguments (:mod:`services.infra.queues`) and stop at start with
``PRECONDITION_FAILED`` on a queue declared otherwise. For each of mensageria's durable queues (RPC,
event handler, retry delay, dead letters) that exists with other arguments, this:

1. refuses, changing nothing, while any of those queues has a consumer (stop the services first);
2. declares ``<queue>.migrating`` (of the new type, without TTL, delivery limit or dead-lettering:
   messages wait there unchanged) and moves every message there, in order, each publish confirmed
   by the broker before the original is acked;
3. binds ``<queue>.migrating`` as the queue is bound (what a publisher sends meanwhile lands there,
   and the bindings are on record should this stop half-way), deletes the queue once empty, and
   declares it again under its own name with the new arguments, bound exactly as before;
4. unbinds ``<queue>.migrating``, moves the messages back, and deletes it.

Messages keep their bodies, headers and properties (but for the ``x-delivery-count`` header, which
the broker writes at each delivery, and a ``user_id`` of another user, which the broker would refuse).

Resumable: a crash or a lost connection at any point leaves every message in the queue, in
``<queue>.migrating``, or (between a confirmed publish and its ack) in both; run it again. A
``<queue>.migrating`` that already holds messages is drained back into the queue first (declaring
the queue again, bound as ``<queue>.migrating`` was, if it had already been deleted), and then the
queue is migrated as usual. A message moved twice that way may come out of order, or twice; the
consumers are idempotent. Running it again on migrated queues changes nothing.

The AMQP user needs to declare, bind, read and delete any of these queues and their
``.migrating`` twins (an administrator's ``AMQP_URI``, not an application user's), and the
management API user (``RABBIT_API_URI`` or ``--api-uri``) to list the vhost's queues and bindings::

    AMQP_URI=amqp://admin:...@rabbit/mensageria python -m tools.migrate_queues \\
        --api-uri http://admin:...@rabbit:15672 --dry-run
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, NoReturn

from services.infra.config import load_config
from services.infra.parking import dead_letter_name
from services.infra.queues import consumed_arguments, dead_letter_arguments, delay_arguments
from services.infra.settings import ConfigError, Settings
from services.infra.topology import SUBSCRIPTIONS, rpc_queue
from tools.broker import SERVICES, ManagementApi, SetupError, UsageError
from tools.preflight import redacted

with warnings.catch_warnings():  # nameko 2.x runs on eventlet, which announces its deprecation
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    import amqp
    from kombu import Connection

PROG = "python -m tools.migrate_queues"
TEMPORARY = ".migrating"
DELIVERY_COUNT = "x-delivery-count"  # written by a quorum queue at each delivery: not the message's
DEFAULT_EXCHANGE = ""


class MigrationError(Exception):
    """The migration cannot go on: exit 1, one line."""


def wanted_arguments(config: dict) -> Iterator[tuple[re.Pattern, Any]]:
    """``(name pattern, arguments(match))`` for every durable queue the services declare."""
    settings = Settings.from_config(config)
    for service, role in SERVICES.items():
        if role.serves_rpc:  # every RPC server has dead letters (malformed requests are parked there)
            queue = rpc_queue(service, config)
            yield re.compile(re.escape(queue.name)), lambda _, q=queue: q.queue_arguments
            yield re.compile(re.escape(dead_letter_name(service))), lambda _: dead_letter_arguments(settings)
    for sub in SUBSCRIPTIONS:
        arguments = consumed_arguments(settings, dead_letter_name(sub.service))
        yield re.compile(re.escape(sub.queue_name)), lambda _, a=arguments: a
        yield (
            re.compile(re.escape(sub.queue_name) + r"\.retry\.([0-9]+)ms"),  # services.infra.retry.delay_queue
            lambda match, target=sub.queue_name: delay_arguments(settings, int(match.group(1)), target),
        )


def arguments_for(name: str, config: dict) -> dict | None:
    """What the services declare ``name`` with; None for a queue that is not mensageria's."""
    for pattern, arguments in wanted_arguments(config):
        match = pattern.fullmatch(name)
        if match:
            return dict(arguments(match))
    return None


def kind(arguments: dict) -> str:
    return str(arguments.get("x-queue-type", "classic"))


@dataclass
class Step:
    """One queue to migrate, as the broker has it now."""

    name: str
    wanted: dict
    current: dict | None  # None: only its temporary queue exists (deleted mid-migration)
    leftover: dict | None = None  # its temporary queue, if a previous run left one
    bindings: list[dict] = field(default_factory=list)

    @property
    def temporary(self) -> str:
        return self.name + TEMPORARY

    @property
    def settled(self) -> bool:
        current = self.current
        return (
            current is not None
            and current.get("arguments", {}) == self.wanted
            and current.get("durable", True)
            and not current.get("auto_delete", False)
        )

    def describe(self) -> str:
        target = kind(self.wanted)
        if self.current is None:
            what = f"declare again as {target} (deleted half-way)"
        elif self.settled:
            what = f"already {target}"
        else:
            source = self.current.get("type") or kind(self.current.get("arguments", {}))
            what = (
                f"{source} → {target}"
                if source != target
                else f"{target}, arguments {self.current['arguments']} → {self.wanted}"
            )
        routes = ", ".join(f"{b['source']} ({b['routing_key']})" for b in self.bindings) or "the default exchange only"
        return f"{self.name}: {what}; bound to {routes}"


def plan(api: ManagementApi, vhost: str, config: dict) -> list[Step]:
    """The queues to migrate or to resume, from the management API's list of the vhost's queues."""
    existing = {queue["name"]: queue for queue in api.request("GET", "queues", vhost).json()}
    steps = []
    names = {name.removesuffix(TEMPORARY) for name in existing}
    for name in sorted(names):
        wanted = arguments_for(name, config)
        if wanted is None:
            continue
        step = Step(name, wanted, existing.get(name), existing.get(name + TEMPORARY))
        if step.settled and step.leftover is None:
            continue
        # a half-done previous run may have bound either one partly: the queue is to have both's
        sources = [n for n, queue in ((name, step.current), (step.temporary, step.leftover)) if queue is not None]
        for source in sources:
            for b in api.request("GET", "queues", vhost, source, "bindings").json():
                binding = {
                    "source": b["source"],
                    "routing_key": b["routing_key"],
                    "arguments": b.get("arguments") or {},
                }
                if b["source"] != DEFAULT_EXCHANGE and binding not in step.bindings:
                    step.bindings.append(binding)
        steps.append(step)
    return steps


class Broker:
    """The AMQP side: declarations, counts and confirmed moves on one channel."""

    def __init__(self, connection: Connection):
        self.connection = connection
        self.userid = connection.userid
        self.channel = None
        self.renew()

    def renew(self) -> None:
        """A new channel. Also after a delete: RabbitMQ 3.10 keeps, per channel, the state of each
        queue it delivered to, by name, and crashes the channel (``INTERNAL_ERROR``) when that name
        now belongs to a queue of another type."""
        if self.channel is not None and self.channel.is_open:
            self.channel.close()
        self.channel = self.connection.channel()
        self.channel.auto_decode = False  # bodies stay the bytes they are
        self.channel.confirm_select()

    def count(self, name: str) -> tuple[int, int] | None:
        """``(messages, consumers)`` now, or None when the queue does not exist."""
        try:
            _, messages, consumers = self.channel.queue_declare(name, passive=True)
        except amqp.exceptions.NotFound:
            self.renew()  # the 404 closed the channel
            return None
        return messages, consumers

    def declare(self, name: str, arguments: dict) -> None:
        self.channel.queue_declare(name, durable=True, auto_delete=False, exclusive=False, arguments=arguments)

    def bind(self, name: str, bindings: list[dict]) -> None:
        for b in bindings:
            self.channel.queue_bind(name, exchange=b["source"], routing_key=b["routing_key"], arguments=b["arguments"])

    def unbind(self, name: str, bindings: list[dict]) -> None:
        for b in bindings:
            self.channel.queue_unbind(
                name, exchange=b["source"], routing_key=b["routing_key"], arguments=b["arguments"]
            )

    def move(self, source: str, target: str) -> int:
        """Every message of ``source`` to the end of ``target``, in order: each original is acked
        only once its copy is confirmed. Returns how many moved."""
        moved = 0
        while (message := self.channel.basic_get(source, no_ack=False)) is not None:
            properties = dict(message.properties)
            headers = {k: v for k, v in (properties.pop("application_headers", None) or {}).items()}
            headers.pop(DELIVERY_COUNT, None)
            if headers:
                properties["application_headers"] = headers
            if properties.get("user_id") not in (None, self.userid):
                properties.pop("user_id")
            copy = amqp.Message(message.body, **properties)
            self.channel.basic_publish_confirm(copy, exchange=DEFAULT_EXCHANGE, routing_key=target, mandatory=True)
            self.channel.basic_ack(message.delivery_info["delivery_tag"])
            moved += 1
        return moved

    def delete(self, name: str) -> None:
        """Delete ``name`` if it is empty and unused (quorum queues refuse ``if_empty``/``if_unused``:
        counted just before instead; nothing else runs during a migration)."""
        counted = self.count(name)
        if counted is None:
            return
        messages, consumers = counted
        if messages or consumers:
            raise MigrationError(
                f"{name} was to be deleted but holds {messages} message(s) and {consumers} consumer(s)"
            )
        self.channel.queue_delete(name)
        self.renew()


def resume(broker: Broker, step: Step) -> int:
    """Drain a previous run's ``<queue>.migrating`` back into the queue; how many messages moved."""
    if step.current is None:  # deleted half-way: declared again with the new arguments, bound as before
        broker.declare(step.name, step.wanted)
        step.current = {"arguments": step.wanted}
    broker.bind(step.name, step.bindings)  # a no-op for a queue bound so already
    broker.unbind(step.temporary, step.bindings)
    moved = broker.move(step.temporary, step.name)
    broker.delete(step.temporary)
    return moved


def migrate(broker: Broker, step: Step) -> int:
    """Steps 2 to 4 of the module's docstring for one queue; how many messages it held."""
    broker.declare(step.temporary, dead_letter_arguments(Settings(queue_type=kind(step.wanted))))
    moved = broker.move(step.name, step.temporary)
    broker.bind(step.temporary, step.bindings)
    moved += broker.move(step.name, step.temporary)  # anything published before the binding took
    broker.delete(step.name)
    broker.declare(step.name, step.wanted)
    broker.bind(step.name, step.bindings)
    broker.unbind(step.temporary, step.bindings)
    broker.move(step.temporary, step.name)
    broker.delete(step.temporary)
    return moved


def refuse_while_consumed(broker: Broker, steps: list[Step]) -> None:
    for step in steps:
        for name in (step.name, step.temporary):
            counted = broker.count(name)
            if counted is not None and counted[1]:
                raise MigrationError(
                    f"queue {name} has {counted[1]} consumer(s): stop the services first (nothing was changed)"
                )


def run(config: dict, amqp_uri: str, api: ManagementApi, dry_run: bool) -> list[str]:
    """Migrate (or, with ``dry_run``, only describe); the lines to print."""
    with Connection(amqp_uri) as connection:
        connection.connect()
        vhost = connection.virtual_host
        steps = plan(api, vhost, config)
        if not steps:
            return [f"nothing to migrate on vhost {vhost!r}: every queue is declared as the services declare it"]
        broker = Broker(connection)
        if dry_run:
            lines = []
            for step in steps:
                counted = broker.count(step.name) if step.current is not None else None
                line = f"would migrate {step.describe()}; {counted[0] if counted else 0} message(s)"
                if step.leftover is not None:
                    waiting = (broker.count(step.temporary) or (0, 0))[0]
                    line += f"; first drains {waiting} message(s) back from {step.temporary}"
                lines.append(
                    line
                    + (f" (has {counted[1]} consumer(s): stop the services first)" if counted and counted[1] else "")
                )
            return lines
        refuse_while_consumed(broker, steps)
        lines = []
        for step in steps:
            try:
                resumed = resume(broker, step) if step.leftover is not None else 0
                if step.settled:
                    lines.append(
                        f"{step.name}: resumed, {resumed} message(s) drained back; already {kind(step.wanted)}"
                    )
                    continue
                description = step.describe()
                moved = migrate(broker, step)
            except (amqp.exceptions.AMQPError, OSError) as exc:
                raise MigrationError(f"{step.name}: {exc}; no message is lost, run it again to resume") from None
            lines.append(f"migrated {description}; {moved} message(s) moved")
        return lines


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=None, help="config file (default: config.yaml)")
    parser.add_argument("--amqp-uri", default=None, help="the broker, as an administrator (default: AMQP_URI)")
    parser.add_argument("--api-uri", default=None, help="http://USER:PASSWORD@HOST:15672 (default: RABBIT_API_URI)")
    parser.add_argument("--dry-run", action="store_true", help="list what it would do, change nothing")
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config)
        settings = Settings.from_config(config)
        api_uri = args.api_uri or settings.rabbit_api_uri
        if not api_uri:
            raise UsageError(
                "the management API is needed to list queues and bindings: set RABBIT_API_URI or --api-uri"
            )
        lines = run(config, args.amqp_uri or config["AMQP_URI"], ManagementApi(api_uri), args.dry_run)
    except (UsageError, ConfigError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except (MigrationError, SetupError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except (amqp.exceptions.AMQPError, OSError) as exc:
        print(f"{PROG}: the broker at {redacted(args.amqp_uri or config['AMQP_URI'])}: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
