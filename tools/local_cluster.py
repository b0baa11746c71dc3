"""RabbitMQ nodes of one's own on this machine: one node, or a cluster of several.

    sudo .venv/bin/python -m tools.local_cluster --nodes 3      # until Ctrl-C

prints an ``AMQP_URI`` listing every node and a ``RABBIT_API_URI``, then waits; Ctrl-C (or
SIGTERM) stops every node and removes its data. It follows the RabbitMQ docs' recipe for a
cluster on one machine: own node names (``…@localhost``), AMQP, distribution and management
ports, data directories, the same Erlang cookie (the nodes share the rabbitmq user's ``HOME``),
``join_cluster``. The machine's own broker is never touched. It needs the Debian/Ubuntu
``rabbitmq-server`` package and root (each node runs as the ``rabbitmq`` user).

The fault tests (``tests/faults/``) and the benchmarks' broker set-ups (``benchmarks/``) use
:class:`PrivateBroker` and :class:`PrivateCluster` the same way.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

import requests

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
T = TypeVar("T")


class NodeError(RuntimeError):
    """A node did not do what it was asked (rabbitmqctl failed, or it never came up)."""


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def free_ports(count: int) -> list[int]:
    """``count`` different ports nothing listens on (each held until all are picked)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]


def wait_until(fetch: Callable[[], T], until: Callable[[T], bool], timeout: float, interval: float = 0.2) -> T:
    """Call ``fetch`` until ``until(value)`` holds; :class:`NodeError` with the last value at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if until(value):
            return value
        if time.monotonic() >= deadline:
            raise NodeError(f"condition not met within {timeout:g}s; last value: {value!r}")
        time.sleep(interval)


class PrivateBroker:
    """A RabbitMQ node of one's own: own name, ports and data directory.

    Its data survives a restart (durable queues, persistent messages). With a
    ``management_port`` it serves the management API there too.
    """

    def __init__(
        self,
        port: int,
        dist_port: int,
        management_port: int | None = None,
        name: str | None = None,
        settings: tuple[str, ...] = (),
    ):
        # not under a test's tmp dir: the node runs as the rabbitmq user, who cannot enter it
        directory = Path(tempfile.mkdtemp(prefix="mensageria-rabbitmq-"))
        self.directory = directory
        self.port = port
        self.management_port = management_port
        self.node = f"{name or 'mensageria-node-' + uuid.uuid4().hex[:8]}@localhost"
        self.env = {
            **os.environ,
            "HOME": "/var/lib/rabbitmq",  # the Erlang cookie rabbitmqctl uses too
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(directory / "pid"),
        }
        conf = [f"listeners.tcp.local = 127.0.0.1:{port}"]
        if management_port is not None:
            conf += ["management.tcp.ip = 127.0.0.1", f"management.tcp.port = {management_port}"]
        (directory / "rabbitmq.conf").write_text("\n".join([*conf, *settings]) + "\n")
        plugins = "rabbitmq_management" if management_port is not None else ""
        (directory / "enabled_plugins").write_text(f"[{plugins}].\n")
        for path in (directory, *directory.iterdir()):
            shutil.chown(path, "rabbitmq", "rabbitmq")

    @property
    def amqp_uri(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    @property
    def api_uri(self) -> str:
        return f"http://guest:guest@127.0.0.1:{self.management_port}"

    def start(self, timeout: float = 60.0) -> None:
        self.launch()
        self.wait_started(timeout)

    def launch(self) -> None:
        """Start the node in the background (``rabbitmq-server -detached``), not waiting for it."""
        subprocess.run(
            [
                "runuser",
                "-u",
                "rabbitmq",
                "--",
                "env",
                *[f"{k}={v}" for k, v in self.env.items() if k.startswith(("RABBITMQ_", "HOME"))],
                RABBITMQ_SERVER,
                "-detached",
            ],
            check=True,
            capture_output=True,
            timeout=30,
        )

    def wait_started(self, timeout: float = 60.0) -> None:
        wait_until(lambda: port_open(self.port), bool, timeout=timeout)
        if self.management_port is not None:
            wait_until(lambda: port_open(self.management_port), bool, timeout=timeout)

    def ctl(self, *args: str, timeout: float = 60) -> str:
        """``rabbitmqctl -n <this node> args...``; its output, or :class:`NodeError` with it."""
        result = subprocess.run(
            ["rabbitmqctl", "-n", self.node, *args], capture_output=True, text=True, timeout=timeout, env=self.env
        )
        if result.returncode != 0:
            raise NodeError(f"rabbitmqctl {' '.join(args)}: {result.stdout}{result.stderr}")
        return result.stdout

    @property
    def pid(self) -> int:
        """The node's Erlang VM (``beam.smp``)."""
        return int((self.directory / "pid").read_text().strip())

    def memory_bytes(self) -> int:
        """Memory the node's Erlang VM has in use now (``rabbitmqctl status``: total, erlang)."""
        return int(json.loads(self.ctl("status", "--formatter", "json"))["memory"]["total"]["erlang"])

    def disk_bytes(self) -> int:
        """Bytes the node's data directory holds on disk (what its messages cost there)."""
        return sum(path.stat().st_blocks * 512 for path in (self.directory / "mnesia").rglob("*") if path.is_file())

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM: no goodbye to its clients or its cluster."""
        os.kill(self.pid, signal.SIGKILL)
        wait_until(lambda: not port_open(self.port), bool, timeout=30, interval=0.1)

    def stop(self) -> None:
        subprocess.run(["rabbitmqctl", "-n", self.node, "stop"], capture_output=True, timeout=60, env=self.env)
        wait_until(lambda: not port_open(self.port), bool, timeout=30)

    def remove(self) -> None:
        try:
            self.stop()
        except (NodeError, subprocess.SubprocessError):  # it would not stop: it goes anyway
            with contextlib.suppress(OSError, ValueError):
                self.kill()
        shutil.rmtree(self.directory, ignore_errors=True)


class PrivateCluster:
    """``size`` RabbitMQ nodes of one's own, clustered (one node is a cluster of one).

    ``with PrivateCluster() as cluster:`` starts it and makes a vhost (``cluster.amqp_uri``
    lists every node on it); leaving stops every node and removes its data, whatever happened.
    A killed node can be started again: it rejoins the cluster.
    """

    PARTITION_HANDLING = "cluster_partition_handling = pause_minority"

    def __init__(self, size: int = 3, prefix: str = "mensageria-cluster"):
        tag = uuid.uuid4().hex[:6]
        ports = free_ports(3 * size)
        self.nodes = [
            PrivateBroker(
                port=ports[3 * n],
                dist_port=ports[3 * n + 1],
                management_port=ports[3 * n + 2],
                name=f"{prefix}-{tag}-{n + 1}",
                settings=(self.PARTITION_HANDLING,),
            )
            for n in range(size)
        ]
        self.vhost = f"mensageria_cluster_{tag}"

    def __enter__(self) -> PrivateCluster:
        try:
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    @property
    def amqp_uri(self) -> str:
        """Every node, ``;``-separated, on the cluster's vhost."""
        return ";".join(self.node_uri(node) for node in self.nodes)

    @property
    def api_uri(self) -> str:
        """Every node's management API, ``;``-separated."""
        return ";".join(node.api_uri for node in self.nodes)

    def node_uri(self, node: PrivateBroker) -> str:
        return f"{node.amqp_uri}{self.vhost}"

    def start(self, timeout: float = 120.0) -> None:
        for node in self.nodes:  # all at once: each boot is mostly waiting
            node.launch()
        for node in self.nodes:
            node.wait_started(timeout)
        first, *others = self.nodes
        for node in others:
            node.ctl("stop_app")
            node.ctl("join_cluster", first.node)
            node.ctl("start_app")
        wait_until(self.running, lambda running: running == {node.node for node in self.nodes}, timeout=timeout)
        first.ctl("add_vhost", self.vhost)
        first.ctl("set_permissions", "-p", self.vhost, "guest", ".*", ".*", ".*")

    def running(self, via: PrivateBroker | None = None) -> set[str]:
        """The nodes the cluster sees running (asked of ``via``, default the first alive)."""
        via = via or self.alive()[0]
        status = json.loads(via.ctl("cluster_status", "--formatter", "json"))
        return set(status["running_nodes"])

    def alive(self) -> list[PrivateBroker]:
        return [node for node in self.nodes if port_open(node.port)]

    def by_name(self, name: str) -> PrivateBroker:
        return next(node for node in self.nodes if node.node == name)

    def api(self, path: str, timeout: float = 10.0) -> requests.Response:
        """``GET /api/<path>`` on the first node alive (the management API of any node sees the cluster)."""
        for node in self.alive():
            try:
                return requests.get(
                    f"http://127.0.0.1:{node.management_port}/api/{path}", auth=("guest", "guest"), timeout=timeout
                )
            except requests.RequestException:
                continue
        raise NodeError("no node of the cluster answers its management API")

    def queue(self, name: str) -> dict:
        response = self.api(f"queues/{quote(self.vhost, safe='')}/{quote(name, safe='')}")
        if response.status_code != 200:
            raise NodeError(f"queue {name}: {response.status_code} {response.text}")
        return response.json()

    def leader(self, queue: str) -> PrivateBroker:
        """The node leading ``queue``: ``leader`` for a quorum queue, its ``node`` for a classic one."""
        info = self.queue(queue)
        return self.by_name(info.get("leader") or info["node"])

    def memory_bytes(self) -> int:
        """Memory every node's Erlang VM has in use now, summed."""
        return sum(node.memory_bytes() for node in self.alive())

    def disk_bytes(self) -> int:
        """Bytes every node's data directory holds, summed."""
        return sum(node.disk_bytes() for node in self.alive())

    def remove(self) -> None:
        for node in self.nodes:
            node.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.local_cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3; 1 makes a single node)")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be 1 or more")
    if os.geteuid() != 0 or shutil.which("runuser") is None or not Path(RABBITMQ_SERVER).exists():
        print(f"local_cluster: needs root and the rabbitmq-server package ({RABBITMQ_SERVER})", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # unwinds through the cluster's removal
    print(f"starting {args.nodes} RabbitMQ node(s) ...", file=sys.stderr, flush=True)
    try:
        with PrivateCluster(args.nodes) as cluster:
            print(f"AMQP_URI='{cluster.amqp_uri}'")
            print(f"RABBIT_API_URI='{cluster.api_uri}'", flush=True)
            print("running; Ctrl-C stops every node and removes its data", file=sys.stderr, flush=True)
            _wait_forever()
    except KeyboardInterrupt:
        pass
    except NodeError as exc:
        print(f"local_cluster: {exc}", file=sys.stderr)
        return 1
    return 0


def _wait_forever() -> None:
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
