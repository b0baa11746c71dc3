"""What every scenario needs around it: vhosts, databases, processes, CPU
accounting, latency statistics, and one place that undoes everything.

Everything a run creates is registered with a :class:`Cleanup` as soon as it
exists, and undone in reverse order by ``Cleanup.close()`` — called from the
runner's ``finally``, from ``atexit``, and on SIGTERM/SIGINT.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
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

    def check(self) -> None:
        self._api("GET", "/api/overview")


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


# --- CPU accounting --------------------------------------------------------------


TICKS = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of one process (all its threads), 0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime (fields 14, 15)


def pids_named(comm: str) -> list[int]:
    """Processes whose command name is ``comm`` (e.g. ``beam.smp``, ``postgres``); read-only."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{entry}/comm").read_text().strip() == comm:
                    found.append(int(entry))
    return found


def _started(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])  # starttime
    except (OSError, IndexError, ValueError):
        return 1 << 62


def rabbitmq_pids() -> list[int]:
    """The shared RabbitMQ node: the oldest ``beam.smp`` (tests may run private nodes beside it)."""
    nodes = pids_named("beam.smp")
    return [min(nodes, key=_started)] if nodes else []


def postgres_pids(databases: Iterable[str]) -> list[int]:
    """PostgreSQL's own background processes and the backends connected to ``databases``
    (not other sessions' backends)."""
    names = tuple(databases)
    found = []
    for pid in pids_named("postgres"):
        with contextlib.suppress(OSError):
            title = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            is_backend = "(" in title or "[local]" in title  # "postgres: user db 127.0.0.1(port) ..."
            if not is_backend or any(f" {name} " in title for name in names):
                found.append(pid)
    return found


def _machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle, all cores, since boot."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / TICKS


def machine_busy_percent(seconds: float = 2.0) -> float:
    """How busy the whole machine is over ``seconds``, in % of one core."""
    before = _machine_busy_seconds()
    time.sleep(seconds)
    return 100.0 * (_machine_busy_seconds() - before) / seconds


def wait_quiet(limit: float, max_busy: float = 30.0) -> float:
    """Wait (up to ``limit`` seconds) until the machine uses under ``max_busy``% of a
    core over 3 s — other work skews every figure; returns the last reading."""
    deadline = time.monotonic() + limit
    busy = machine_busy_percent(3.0)
    while busy > max_busy and time.monotonic() < deadline:
        busy = machine_busy_percent(3.0)
    return busy


class CpuMeter:
    """CPU used by named groups of processes between ``start()`` and ``stop()``,
    as a percentage of one core (200% = both cores of a 2-core machine); ``other``
    is what the rest of the machine used meanwhile (other sessions, tests, ...)."""

    def __init__(self, groups: dict[str, Callable[[], Iterable[int]]]):
        self.groups = groups
        self.before: dict[str, dict[int, float]] = {}
        self.machine_before = 0.0
        self.started = 0.0

    def _sample(self) -> dict[str, dict[int, float]]:
        return {name: {pid: _cpu_seconds(pid) for pid in pids()} for name, pids in self.groups.items()}

    def start(self) -> None:
        self.before = self._sample()
        self.machine_before = _machine_busy_seconds()
        self.started = time.monotonic()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        machine = _machine_busy_seconds() - self.machine_before
        elapsed = max(time.monotonic() - self.started, 1e-9)
        usage = {}
        for name, pids in after.items():
            before = self.before.get(name, {})
            # a process that ended meanwhile reads 0 now: leave it out rather than count it negative
            used = sum(seconds - before.get(pid, 0.0) for pid, seconds in pids.items() if seconds)
            usage[name] = 100.0 * used / elapsed
        usage["other"] = max(0.0, 100.0 * machine / elapsed - sum(usage.values()))
        return usage


def format_cpu(usage: dict[str, float], ops: float | None = None) -> str:
    """``cpu% a=.. b=..``; with ``ops`` (per second), also the CPU milliseconds one
    operation costs the system under test (every group but the client and others)."""
    text = "cpu% " + " ".join(f"{name}={value:.0f}" for name, value in usage.items())
    if ops:
        served = sum(value for name, value in usage.items() if name not in ("client", "other"))
        per_op = served * 10 / ops
        text += f" (≈{per_op:.{2 if per_op < 1 else 1}f} ms CPU per op, client excluded)"
    return text


# --- statistics and machine ------------------------------------------------------


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None if empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), round(q * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


def machine_info() -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    ram_gib = ""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                ram_gib = f"{int(line.split()[1]) / 1024 / 1024:.1f}"
    return {"nproc": str(len(os.sched_getaffinity(0))), "cpu_model": model, "ram_gib": ram_gib}


def git_commit() -> tuple[str, str]:
    """(short commit, "clean" | "dirty": tracked files changed since it) of the work tree."""

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        return git("rev-parse", "--short", "HEAD"), "dirty" if git(
            "status", "--porcelain", "--untracked-files=no"
        ) else "clean"
    except (OSError, subprocess.CalledProcessError):
        return "unknown", ""
