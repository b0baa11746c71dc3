"""Least-privilege RabbitMQ access: what each mensageria process may do on the broker,
and a user that may do just that.

python -m tools.broker permissions [--process NAME[,NAME...]] [--markdown]
python -m tools.broker setup --api-uri http://ADMIN:PASSWORD@HOST:15672 --vhost VHOST \\
    --user USER --password-env VAR [--process all|students,status,...] [--wait 60]

``permissions`` prints each process's configure / write / read patterns (RabbitMQ's
three regular expressions per user and vhost). ``setup`` goes through the management
HTTP API: it creates the vhost (if missing) and the user (no tags: not an administrator,
no management UI; its password read from the environment variable VAR, never from the
command line), and sets the user's permissions on the vhost to the union of the named
processes' patterns. Re-running it is harmless (and applies a changed password)::

    RABBITMQ_APP_PASSWORD=... python -m tools.broker setup --api-uri http://admin:...@localhost:15672 \\
        --vhost mensageria --user mensageria --password-env RABBITMQ_APP_PASSWORD

The patterns come from the names the code declares (nameko's ``rpc-<service>``,
``rpc.reply-<service>-<uuid>``, ``<source>.events``, the handler queues of
:mod:`services.infra.topology` with their retry queues, ``<service>.dead-letters``, the pika
client's reply queue). RabbitMQ checks: declaring or deleting a queue or exchange needs
*configure* on it; publishing needs *write* on the exchange; binding a queue needs *write*
on the queue and *read* on the exchange; consuming, getting and purging need *read* on the
queue; declaring a queue with a dead-letter exchange needs *write* on that exchange and
*read* on the queue. The nameless default exchange is checked as ``amq.default``.

``client`` is the pika client's ``RpcClient``. A program that also publishes events with its
``EventPublisher`` needs configure and write on ``<source>.events``; one that subscribes with
``EventSubscriber`` needs configure and read on ``<source>.events`` and configure, write and
read on its own queue: grant those to that program's user alone.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NoReturn
from urllib.parse import quote, unquote, urlsplit

import requests

from services.infra.parking import dead_letter_name
from services.infra.topology import SUBSCRIPTIONS, Subscription, declarations
from tools.preflight import redacted

with warnings.catch_warnings():  # nameko 2.x runs on eventlet, which announces its deprecation
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    from nameko.rpc import RPC_QUEUE_TEMPLATE, RPC_REPLY_QUEUE_TEMPLATE, get_rpc_exchange
    from nameko.standalone.events import get_event_exchange
    from nameko.standalone.rpc import StandaloneProxyBase

OPERATIONS = ("configure", "write", "read")
UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"  # str(uuid.uuid4())
HEX_UUID = "[0-9a-f]{32}"  # uuid.uuid4().hex: nameko's broadcast_identifier
RETRY_SUFFIX = r"\.retry\.[0-9]+ms"  # services.infra.retry.delay_queue: the TTL is in the name
NOTHING = "^$"  # RabbitMQ's "no access": no resource has an empty name (the default exchange is amq.default)


def literal(name: str) -> str:
    """``name`` as a regular expression matching only itself (names here are ``[\\w.-]``)."""
    return re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", name)


@dataclass(frozen=True)
class Permissions:
    """One user's three patterns on one vhost, as RabbitMQ stores them."""

    configure: str
    write: str
    read: str

    def as_dict(self) -> dict[str, str]:
        return {operation: getattr(self, operation) for operation in OPERATIONS}


@dataclass
class Grants:
    """Names (regular expressions, unanchored) a process may configure, write and read."""

    configure: set[str] = field(default_factory=set)
    write: set[str] = field(default_factory=set)
    read: set[str] = field(default_factory=set)

    def allow(self, name: str, *operations: str) -> None:
        for operation in operations:
            getattr(self, operation).add(name)

    def __or__(self, other: Grants) -> Grants:
        return Grants(*(getattr(self, op) | getattr(other, op) for op in OPERATIONS))

    def permissions(self) -> Permissions:
        return Permissions(*(anchored(getattr(self, operation)) for operation in OPERATIONS))


def anchored(names: Iterable[str]) -> str:
    names = sorted(set(names))
    if not names:
        return NOTHING
    return f"^{names[0]}$" if len(names) == 1 else f"^({'|'.join(names)})$"


# --- what each kind of participant does --------------------------------------

RPC_EXCHANGE = literal(get_rpc_exchange({}).name)  # nameko-rpc (config.yaml sets no RPC_EXCHANGE)
DEFAULT_EXCHANGE = literal("amq.default")  # RabbitMQ checks the nameless default exchange under this name


def nameko_reply_queue(service: str) -> str:
    """``rpc.reply-<service>-<uuid>``: the reply queue of a nameko RPC caller (``ReplyListener``)."""
    return literal(RPC_REPLY_QUEUE_TEMPLATE.format(service, "\0")).replace("\0", UUID)


def rpc_server(grants: Grants, service: str) -> None:
    """``rpc-<service>`` bound to ``nameko-rpc`` by ``<service>.*``; replies go back through ``nameko-rpc``."""
    queue = literal(RPC_QUEUE_TEMPLATE.format(service))
    grants.allow(RPC_EXCHANGE, "configure", "write", "read")  # declared with the queue; replies; bind
    grants.allow(queue, "configure", "write", "read")  # declare, bind, consume


def rpc_caller(grants: Grants, reply_queue: str) -> None:
    """Requests to ``nameko-rpc``; replies in a queue of one's own, bound to ``nameko-rpc``."""
    grants.allow(RPC_EXCHANGE, "configure", "write", "read")  # declare, publish requests, bind
    grants.allow(reply_queue, "configure", "write", "read")  # declare, bind, consume


def dead_letters(grants: Grants, service: str) -> None:
    """``<service>.dead-letters``: parked through the default exchange; listed, replayed, purged."""
    grants.allow(literal(dead_letter_name(service)), "configure", "read")
    grants.allow(DEFAULT_EXCHANGE, "write")  # parking, retries and replays are published to it


def event_handler(grants: Grants, subscription: Subscription) -> None:
    """The handler's queue on ``<source>.events`` (declared with its exchange) and its retry queues,
    TTL queues that dead-letter back through the default exchange."""
    exchange = literal(get_event_exchange(subscription.source, {}).name)
    queue = literal(subscription.queue_name)
    grants.allow(exchange, "configure", "read")  # nameko declares the exchange with the queue; bind
    grants.allow(queue, "configure", "write", "read")  # declare, bind, consume
    grants.allow(queue + RETRY_SUFFIX, "configure", "read")  # declared with a dead-letter exchange
    grants.allow(DEFAULT_EXCHANGE, "write")  # ... which is the default exchange; retries go through it
    dead_letters(grants, subscription.service)


def event_publisher(grants: Grants, source: str) -> None:
    """``<source>.events``, and (declared before the first publish, so no event is dropped)
    the subscriber queues bound to it: declared and bound here, consumed only by their service.
    As quorum queues (the default ``QUEUE_TYPE``) they are declared with a dead-letter exchange
    (poison messages go to the subscriber's dead letters), and RabbitMQ lets only a user with
    *read* on such a queue, and *write* on that exchange, create it."""
    exchange, *queues = declarations(source, {})
    grants.allow(literal(exchange.name), "configure", "write", "read")  # declare, publish, bind
    for queue in queues:
        grants.allow(literal(queue.name), "configure", "write")
        arguments = queue.queue_arguments or {}
        if "x-dead-letter-exchange" in arguments:
            grants.allow(literal(queue.name), "read")
            grants.allow(literal(arguments["x-dead-letter-exchange"] or "amq.default"), "write")


def event_follower(grants: Grants, service: str, source: str) -> None:
    """Broadcast handlers (the gateway's read copy of students, ``gateway.student_reads``): on
    ``<source>.events``, a queue per process and handler, ``evt-<source>-<event>--<service>.<handler>-<uuid>``,
    exclusive to the process that declares it."""
    exchange = literal(get_event_exchange(source, {}).name)
    queue = literal(f"evt-{source}-") + "[a-z_]+" + literal(f"--{service}.") + "[a-z_]+-" + HEX_UUID
    grants.allow(exchange, "configure", "read")  # nameko declares the exchange with the queue; bind
    grants.allow(queue, "configure", "write", "read")  # declare, bind, consume


@dataclass(frozen=True)
class Role:
    """What a Nameko process does on the broker (tests/unit/test_broker_permissions.py
    checks these against the service classes)."""

    serves_rpc: bool = False
    calls_rpc: bool = False
    publishes_events: bool = False
    follows_events: tuple[str, ...] = ()  # sources whose events every process hears (broadcast handlers)


SERVICES: dict[str, Role] = {
    "students": Role(serves_rpc=True, publishes_events=True),
    "status": Role(serves_rpc=True, calls_rpc=True, publishes_events=True),
    "certificates": Role(serves_rpc=True, calls_rpc=True, publishes_events=True),
    "notifications": Role(serves_rpc=True, calls_rpc=True),
    "gateway": Role(calls_rpc=True, publishes_events=True, follows_events=("status", "students")),
}
# callers that are no Nameko service, by their reply queues: the pika client's (clients/rpc.py,
# `RpcClient._prepare`; named here, not imported: the image does not ship clients/, and
# tests/unit/test_broker_permissions.py checks the name against the client) and nameko's
# standalone proxy's (`nameko shell`, tools/shell.py)
PIKA_REPLY_QUEUE = "pika_client-reply-"
STANDALONE_PROXY = StandaloneProxyBase.ServiceContainer.service_name
CALLERS: dict[str, str] = {
    "client": literal(PIKA_REPLY_QUEUE) + UUID,
    "shell": nameko_reply_queue(STANDALONE_PROXY),
}


def service_grants(service: str, role: Role) -> Grants:
    grants = Grants()
    if role.serves_rpc:
        rpc_server(grants, service)
        dead_letters(grants, service)  # malformed requests are parked; DeadLetterRpc reads them
    if role.calls_rpc:
        rpc_caller(grants, nameko_reply_queue(service))
    for subscription in SUBSCRIPTIONS:
        if subscription.service == service:
            event_handler(grants, subscription)
    if role.publishes_events:
        event_publisher(grants, service)
    for source in role.follows_events:
        event_follower(grants, service, source)
    return grants


def caller_grants(reply_queue: str) -> Grants:
    grants = Grants()
    rpc_caller(grants, reply_queue)
    return grants


PROCESSES: dict[str, Grants] = {
    **{service: service_grants(service, role) for service, role in SERVICES.items()},
    **{caller: caller_grants(reply_queue) for caller, reply_queue in CALLERS.items()},
}


def permissions(processes: Iterable[str]) -> Permissions:
    """The patterns that let one user run every process in ``processes``."""
    union = Grants()
    for process in processes:
        union = union | PROCESSES[process]
    return union.permissions()


# --- the management API ------------------------------------------------------


class UsageError(Exception):
    """Bad input: exit 2."""


class SetupError(Exception):
    """The broker said no, or was not there: exit 1."""


class Unavailable(SetupError):
    """The management API is not (yet) there: worth waiting for."""


class ManagementApi:
    """The RabbitMQ management HTTP API at ``http://ADMIN:PASSWORD@HOST:15672``; given a cluster's
    (several, ``;``-separated, as ``RABBIT_API_URI`` may list them), the first node's: any node's
    API manages the whole cluster."""

    def __init__(self, uri: str, timeout: float = 10.0):
        uri = uri.split(";")[0].strip()
        parts = urlsplit(uri)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--api-uri must be http(s)://ADMIN:PASSWORD@HOST:15672, not {redacted(uri)!r}")
        if not parts.username or not parts.password:
            raise UsageError("--api-uri needs the administrator's credentials: http://ADMIN:PASSWORD@HOST:15672")
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        self.base = f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}/api"
        self.username = unquote(parts.username)
        self.shown = redacted(uri)
        self.timeout = timeout
        self.session = requests.Session()
        self.session.auth = (self.username, unquote(parts.password))

    def request(self, method: str, *path: str, json: dict | None = None) -> requests.Response:
        """``method`` on ``/api/<path...>`` (each part quoted: the vhost ``/`` is ``%2F``);
        fails with :class:`SetupError` unless it is 2xx, or 404 on a GET."""
        url = "/".join([self.base, *(quote(part, safe="") for part in path)])
        try:
            response = self.session.request(method, url, json=json, timeout=self.timeout)
        except requests.RequestException as exc:
            raise Unavailable(f"the management API at {self.shown} is unreachable ({type(exc).__name__})") from None
        if response.status_code >= 500:  # e.g. 503 while the broker boots
            raise Unavailable(f"the management API at {self.shown} answered {response.status_code}")
        if response.status_code == 401:
            raise SetupError(f"the management API at {self.shown} refused the credentials of {self.username!r} (401)")
        if not response.ok and not (method == "GET" and response.status_code == 404):
            raise SetupError(f"{method} /api/{'/'.join(path)}: {response.status_code} {response.text[:200].strip()}")
        return response


def wait_for_api(api: ManagementApi, timeout: float) -> None:
    """Until the management API answers (it comes up a while after the broker's AMQP port)."""
    deadline = time.monotonic() + timeout
    announced = False
    while True:
        try:
            api.request("GET", "overview")
            return
        except Unavailable as exc:
            if time.monotonic() >= deadline:
                raise Unavailable(f"{exc}; waited {timeout:g}s") from None
            if not announced:
                print(f"waiting for the RabbitMQ management API at {api.shown} ...", file=sys.stderr)
                announced = True
        time.sleep(1.0)


def ensure_vhost(api: ManagementApi, vhost: str) -> None:
    api.request("PUT", "vhosts", vhost, json={})


def ensure_user(api: ManagementApi, user: str, password: str) -> None:
    """The user, with ``password`` and no tags. Refuses to touch the administrator or any
    user with tags: that would take an operator's rights away."""
    if user == api.username:
        raise SetupError(f"user {user!r} is the administrator --api-uri logs in as; the application needs its own")
    existing = api.request("GET", "users", user)
    if existing.status_code == 200:
        tags = existing.json().get("tags") or []
        tags = [t for t in tags.split(",") if t] if isinstance(tags, str) else tags
        if tags:
            raise SetupError(f"user {user!r} exists with tags {','.join(tags)}: choose another name for the app")
    api.request("PUT", "users", user, json={"password": password, "tags": ""})


def set_permissions(api: ManagementApi, vhost: str, user: str, patterns: Permissions) -> None:
    api.request("PUT", "permissions", vhost, user, json=patterns.as_dict())


def delete_user(api: ManagementApi, user: str) -> None:
    api.request("DELETE", "users", user)


def setup(api: ManagementApi, vhost: str, user: str, password: str, processes: list[str]) -> Permissions:
    """Vhost, user and permissions, each step idempotent; returns the permissions set."""
    patterns = permissions(processes)
    ensure_user(api, user, password)  # first: it may refuse, and then nothing was changed
    ensure_vhost(api, vhost)
    set_permissions(api, vhost, user, patterns)
    return patterns


# --- command line ------------------------------------------------------------


def process_names(value: str) -> list[str]:
    """``all`` or comma-separated names of :data:`PROCESSES`."""
    names = list(PROCESSES) if value.strip() == "all" else [n.strip() for n in value.split(",") if n.strip()]
    unknown = [name for name in names if name not in PROCESSES]
    if unknown or not names:
        raise UsageError(f"unknown process {','.join(unknown) or value!r}; known: all, {', '.join(PROCESSES)}")
    return names


def password_from(variable: str) -> str:
    password = os.environ.get(variable, "")
    if not password:
        raise UsageError(f"environment variable {variable} (--password-env) is not set or empty")
    return password


def print_permissions(names: list[str], markdown: bool) -> None:
    if markdown:
        print("| Process | configure | write | read |\n|---|---|---|---|")
    for name in names:
        patterns = PROCESSES[name].permissions()
        if markdown:  # a pipe inside a table cell, even in code, is written \|
            cells = [getattr(patterns, operation).replace("|", "\\|") for operation in OPERATIONS]
            print(f"| {name} | " + " | ".join(f"`{cell}`" for cell in cells) + " |")
        else:
            print(name)
            for operation in OPERATIONS:
                print(f"  {operation:<10} {getattr(patterns, operation)}")


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, not the usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def main(argv: list[str] | None = None) -> int:
    parser = Parser(prog="python -m tools.broker", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    show = commands.add_parser("permissions", help="print each process's configure / write / read patterns")
    show.add_argument("--process", default="all", help="a process, comma-separated processes or all (default)")
    show.add_argument("--markdown", action="store_true", help="as a Markdown table")
    make = commands.add_parser("setup", help="create the vhost and the user, and set the user's permissions")
    make.add_argument("--api-uri", required=True, help="http://ADMIN:PASSWORD@HOST:15672")
    make.add_argument("--vhost", required=True)
    make.add_argument("--user", required=True)
    make.add_argument("--password-env", required=True, metavar="VAR", help="environment variable with the password")
    make.add_argument("--process", default="all", help="the processes the user runs: all (default) or a,b,...")
    make.add_argument("--wait", type=float, default=60.0, help="seconds to wait for the management API (default 60)")
    args = parser.parse_args(argv)
    try:
        names = process_names(args.process)
        if args.command == "permissions":
            print_permissions(names, args.markdown)
            return 0
        if not args.vhost.strip() or not args.user.strip():
            raise UsageError("--vhost and --user must not be empty")
        password = password_from(args.password_env)
        api = ManagementApi(args.api_uri)
        wait_for_api(api, args.wait)
        setup(api, args.vhost, args.user, password, names)
    except UsageError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr)
        return 2
    except SetupError as exc:
        print(f"{parser.prog}: {exc}", file=sys.stderr)
        return 1
    print(f"user {args.user!r} (no tags) on vhost {args.vhost!r}: permissions for {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
