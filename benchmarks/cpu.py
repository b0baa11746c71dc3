"""CPU accounting: what each group of processes, and the whole machine, used
while a step ran (read from ``/proc``, read-only), and waiting for a quiet machine."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

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
        self.elapsed = 0.0  # the last start() to stop(), in seconds

    def _sample(self) -> dict[str, dict[int, float]]:
        return {name: {pid: _cpu_seconds(pid) for pid in pids()} for name, pids in self.groups.items()}

    def start(self) -> None:
        self.before = self._sample()
        self.machine_before = _machine_busy_seconds()
        self.started = time.monotonic()

    def stop(self) -> dict[str, float]:
        after = self._sample()
        machine = _machine_busy_seconds() - self.machine_before
        self.elapsed = elapsed = max(time.monotonic() - self.started, 1e-9)
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
    operation costs the system under test (every group but the client and others),
    in all and per group: ``(≈3.1 ms CPU per op, client excluded: gateway 0.71, ...)``."""
    text = "cpu% " + " ".join(f"{name}={value:.0f}" for name, value in usage.items())
    if ops:
        served = {name: value * 10 / ops for name, value in usage.items() if name not in ("client", "other")}
        per_op = sum(served.values())
        groups = ", ".join(f"{name} {ms:.2f}" for name, ms in served.items())
        text += f" (≈{per_op:.{2 if per_op < 1 else 1}f} ms CPU per op, client excluded: {groups})"
    return text
