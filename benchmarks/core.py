"""The runner's vocabulary: a result row (and the percentile of its p50/p99), a scenario,
sizes, and the context every scenario function receives.

The context starts the running system through the function the runner hands it
(``start_system``): this module knows only what a system must offer
(:class:`RunningSystem`), never which one it is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

from benchmarks.infra import Broker, Cleanup, Postgres

if TYPE_CHECKING:
    from benchmarks.brokers import BrokerSetup

NO_BACKEND = "-"
SQLITE = "sqlite"
POSTGRESQL = "postgresql"
BACKENDS = (SQLITE, POSTGRESQL)


@dataclass
class Row:
    """One measured line of the table (and of results.csv)."""

    key: str  # the letter: a (raw pika), b (Celery), c, d, e (ours)
    scenario: str
    backend: str
    concurrency: int | None
    ops: float  # operations per second
    count: int  # operations measured
    p50_ms: float | None = None
    p99_ms: float | None = None
    notes: str = ""
    ratio_a: float | None = None
    ratio_b: float | None = None


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None if empty)."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), round(q * len(sorted_values) + 0.5)))
    return sorted_values[rank - 1]


@dataclass(frozen=True)
class Scenario:
    """One function that measures something and returns rows.

    ``run(ctx, backend)`` is called once per backend. Scenarios with
    ``needs_system`` get the running mensageria from ``ctx.system(backend)``;
    the runner orders them so that each backend's system starts only once. These,
    and those ``per_setup``, run once per broker set-up (``ctx.broker_setup``).
    """

    key: str
    name: str
    run: Callable[[Context, str], list[Row]]
    backends: tuple[str, ...] = (NO_BACKEND,)
    needs_system: bool = False
    per_setup: bool = False  # run once per broker set-up, like the system's scenarios


def plan(
    scenarios: list[Scenario], only: set[str], backends: tuple[str, ...], setups: tuple[str, ...]
) -> list[tuple[Scenario, str, str | None]]:
    """Every (scenario, backend, broker set-up) to run: standalone ones first (on the shared
    broker, no set-up), then per set-up its own scenarios and each backend's system scenarios
    together, so each system starts once."""
    items = []
    for index, scenario in enumerate(scenarios):
        if only and scenario.key not in only:
            continue
        for backend in scenario.backends:
            if backend != NO_BACKEND and backend not in backends:
                continue
            if not (scenario.needs_system or scenario.per_setup):
                items.append(((0, 0, 0, index), scenario, backend, None))
                continue
            for rank, setup in enumerate(setups):
                group = 1 + BACKENDS.index(backend) if scenario.needs_system else 0
                items.append(((1, rank, group, index), scenario, backend, setup))
    return [(scenario, backend, setup) for _, scenario, backend, setup in sorted(items, key=lambda item: item[0])]


@dataclass
class Sizes:
    raw_messages: int = 20_000
    raw_window: int = 1_000  # publisher confirms outstanding at once
    celery_tasks: int = 4_000
    students: int = 512
    status_requests: tuple[int, ...] = (400, 3_000, 3_000)  # per concurrency level
    concurrency: tuple[int, ...] = (1, 16, 64)
    backlog: int = 3_000  # status events queued straight into the status service
    bulk_rows: int = 100_000  # rows of the one bulk job
    bulk_max_rows: int = 0  # the gateway's BULK_MAX_ROWS (0: bulk_rows, at least config.yaml's 100,000)
    completions: int = 2_000  # (f) course completions through POST /api/v1/certificate/
    reads: int = 3_000
    read_concurrency: int = 16
    echo_calls: int = 6_000
    trace_changes: int = 20_000  # status changes' worth of tracing hooks, per set-up
    console_requests: int = 1_000_000  # (o) status requests written before the console is timed
    console_dead_letters: int = 100_000  # (o) messages parked in status.dead-letters
    console_gets: int = 50  # (o) GETs per page
    console_streams: int = 10  # (o) live pages held open
    queue_messages: int = 100_000  # (q) messages at rest in the queue whose cost is measured
    scale_completions: int = 400  # (s) course completions in the burst
    gateway_processes: int = 1  # GATEWAY_PROCESSES of the running system (make run: one per core, at most 4)

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            raw_messages=2_000,
            celery_tasks=300,
            students=128,
            status_requests=(50, 300, 300),
            backlog=300,
            bulk_rows=5_000,
            completions=200,
            reads=300,
            echo_calls=600,
            trace_changes=2_000,
            console_requests=20_000,
            console_dead_letters=2_000,
            console_gets=10,
            console_streams=3,
            queue_messages=10_000,
            scale_completions=40,
        )


class RunningSystem(Protocol):
    """What the context needs of a running system: its backend, and a way to stop it."""

    backend: str

    def close(self) -> None: ...


SystemT = TypeVar("SystemT", bound=RunningSystem)


@dataclass
class Context(Generic[SystemT]):
    broker: Broker
    postgres: Postgres
    sizes: Sizes
    cleanup: Cleanup
    workdir: Path
    start_system: Callable[[Context[SystemT], str], SystemT]  # e.g. ``System.start``, passed by the runner
    profile_dir: Path | None = None
    profile_seconds: float = 10.0
    broker_setup: BrokerSetup | None = None  # what the system runs on (the runner sets it; see brokers.py)
    _system: SystemT | None = field(default=None, repr=False)

    def system(self, backend: str) -> SystemT:
        """mensageria running on ``backend`` (one at a time: the previous one is stopped)."""
        if self._system is not None and self._system.backend != backend:
            self._system.close()
            self._system = None
        if self._system is None:
            self._system = self.start_system(self, backend)
        return self._system

    def close_system(self) -> None:
        if self._system is not None:
            self._system.close()
            self._system = None
