"""What a run creates around its scenarios — vhosts, databases, processes —
and the one place that undoes it all.

Everything a run creates is registered with a :class:`Cleanup` as soon as it
exists, and undone in reverse order by ``Cleanup.close()`` — called from the
runner's ``finally``, from ``atexit``, and on SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlparse

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent


# --- cleanup -------------------------------------------------------------------


class Cleanup:
    """A stack of undo actions, run once, newest first, errors reported not raised."""

    def __init__(self) -> None:
        self.actions: list[tuple[str, Callable[[], None]]] = []

    def push(self, what: str, action: Callable[[], None]) -> None:
        self.actions.append((what, action))

    def close(self) -> None:
        while self.actions:
            what, action = self.actions.pop()
            try:
                action()
            except Exception as exc:  # keep undoing the rest
                print(f"cleanup: {what} failed: {exc}", file=sys.stderr)


@contextlib.contextmanager
def scoped(parent: Cleanup, what: str) -> Iterator[Cleanup]:
    """A :class:`Cleanup` closed when the block ends (and by ``parent``, should the run stop first)."""
    cleanup = Cleanup()
    parent.push(what, cleanup.close)
    try:
        yield cleanup
    finally:
        cleanup.close()


# --- RabbitMQ ------------------------------------------------------------------


@dataclass
class Broker:
    amqp_uri: str  # without a vhost, e.g. amqp://guest:guest@localhost:5672/
    api_uri: str  # management API, e.g. http://guest:guest@localhost:15672

    @property
    def username(self) -> str:
        return urlparse(self.amqp_uri).username or "guest"

    def _api(self, method: str, path: str, **kwargs) -> requests.Response:
        api = urlparse(self.api_uri)
        base = f"{api.scheme}://{api.hostname}:{api.port or 15672}"
        response = requests.request(
            method, base + path, auth=(api.username or "guest", api.password or "guest"), timeout=10, **kwargs
        )
        response.raise_for_status()
        return response

    def create_vhost(self, cleanup: Cleanup, purpose: str) -> str:
        """A fresh vhost the user may use, deleted by ``cleanup``; returns its AMQP URI."""
        vhost = f"mensageria_bench_{purpose}_{uuid.uuid4().hex[:8]}"
        self._api("PUT", f"/api/vhosts/{quote(vhost, safe='')}")
        cleanup.push(f"delete vhost {vhost}", lambda: self.delete_vhost(vhost))
        self._api(
            "PUT",
            f"/api/permissions/{quote(vhost, safe='')}/{quote(self.username, safe='')}",
            json={"configure": ".*", "write": ".*", "read": ".*"},
        )
        return f"{self.amqp_uri.rstrip('/')}/{vhost}"

    def delete_vhost(self, vhost: str) -> None:
        with contextlib.suppress(requests.HTTPError):  # already gone
            self._api("DELETE", f"/api/vhosts/{quote(vhost, safe='')}")

    def consumers(self, amqp_uri: str) -> dict[str, int]:
        """Each queue of the vhost of ``amqp_uri`` (one :meth:`create_vhost` made), and its consumers."""
        vhost = urlparse(amqp_uri).path.lstrip("/")
        queues = self._api("GET", f"/api/queues/{quote(vhost, safe='')}", params={"columns": "name,consumers"}).json()
        return {queue["name"]: queue.get("consumers", 0) for queue in queues}

    def purge(self, amqp_uri: str, queue: str) -> None:
        """Drop every message in ``queue`` of the vhost of ``amqp_uri``, if it exists."""
        vhost = urlparse(amqp_uri).path.lstrip("/")
        with contextlib.suppress(requests.HTTPError):  # not declared (yet): nothing to drop
            self._api("DELETE", f"/api/queues/{quote(vhost, safe='')}/{quote(queue, safe='')}/contents")

    def check(self) -> None:
        self._api("GET", "/api/whoami")  # not /api/overview: it sums every vhost's queues, and fails with any


# --- PostgreSQL ------------------------------------------------------------------


@dataclass
class Postgres:
    admin_uri: str  # e.g. postgresql+psycopg2://postgres@127.0.0.1:5432/postgres

    def _admin(self, statement: str) -> None:
        engine = create_engine(make_url(self.admin_uri), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as connection:
                connection.execute(text(statement))
        finally:
            engine.dispose()

    def create_database(self, cleanup: Cleanup, name: str) -> str:
        """A fresh (dropped first if a crashed run left it) database; returns its URI."""
        self.drop_database(name)
        self._admin(f'CREATE DATABASE "{name}"')
        cleanup.push(f"drop database {name}", lambda: self.drop_database(name))
        return make_url(self.admin_uri).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, name: str) -> None:
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def check(self) -> None:
        self._admin("SELECT 1")


def count(text: str) -> int:
    """An argument that counts something: a whole number, at least 1 (argparse's ``type``)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def counts(text: str) -> list[int]:
    """A comma-separated list of :func:`count` values."""
    return [count(part) for part in text.split(",")]


def add_postgres_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--postgres-uri",
        default=os.environ.get("TEST_POSTGRES_URI", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"),
        help="an admin connection that may create and drop databases",
    )


def add_database_arguments(parser: argparse.ArgumentParser) -> None:
    """``--backend`` and ``--postgres-uri`` of a benchmark that runs on one database alone."""
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    add_postgres_argument(parser)


def fresh_database(args: argparse.Namespace, cleanup: Cleanup, workdir: Path, name: str) -> str:
    """A new, empty database for one run (a SQLite file in ``workdir``, or a PostgreSQL database
    ``name`` dropped by ``cleanup``); its URI."""
    if args.backend == "postgresql":
        return Postgres(args.postgres_uri).create_database(cleanup, name)
    path = workdir / f"{name}.db"
    for leftover in (path, path.with_name(f"{path.name}-wal"), path.with_name(f"{path.name}-shm")):
        leftover.unlink(missing_ok=True)
    return f"sqlite:///{path}"


# --- processes -------------------------------------------------------------------


def start_process(
    cleanup: Cleanup, name: str, command: list[str], env: dict[str, str], log_path: Path
) -> subprocess.Popen:
    """A child process with its output in ``log_path``; stopped by ``cleanup``."""
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    cleanup.push(f"stop {name} (pid {process.pid})", lambda: stop_process(process))
    return process


def stop_process(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """SIGTERM (graceful), then SIGKILL what is left after ``timeout``."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGCONT)
            process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for pid in [*descendants(process.pid), process.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait()


def children(pid: int) -> list[int]:
    pids: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                pids += [int(child) for child in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return pids


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found += [child, *descendants(child)]
    return found


def wait_for_child(pid: int, timeout: float = 30.0) -> int:
    """The first child of ``pid`` (the ``nameko run`` under ``tools.launch``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = children(pid)
        if found:
            return found[0]
        time.sleep(0.05)
    raise RuntimeError(f"process {pid} started no child within {timeout:g}s")


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
