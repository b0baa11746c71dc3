"""Peak memory: the largest resident set (RSS) each group of processes reached while a step ran.

Groups are the :class:`~benchmarks.cpu.CpuMeter`'s (name → the pids to watch). A thread polls
every process's ``VmRSS`` (``/proc/<pid>/status``, read-only) ten times a second (which processes
a group has is looked up once a second: a process started meanwhile is watched from then on); for
the processes this run started, the kernel's own high-water mark ``VmHWM`` is reset at the start
(``clear_refs``, allowed on one's own processes) and read at the end, so a peak between two polls
is not missed. A group's figure is its largest single process's peak: what a per-process limit
(e.g. "no process above 500 MB") is about.

    meter = RssMeter(system.cpu_groups())
    meter.start()
    ...
    peaks = meter.stop()   # {"gateway": 84.2, "status": 131.0, ...} in MiB
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

POLL = 0.1
RESOLVE = 10  # polls between looks at which processes each group has (its pids() scan /proc)


def _status_kib(pid: int, field: str) -> int:
    """``field`` (``VmRSS``, ``VmHWM``) of ``/proc/<pid>/status`` in KiB, 0 if the process is gone."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _reset_peak(pid: int) -> bool:
    """Reset ``VmHWM`` to the current RSS; False if not allowed (not our process)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class RssMeter:
    """Peak RSS (MiB) of each group's largest process between ``start()`` and ``stop()``."""

    def __init__(self, groups: dict[str, Callable[[], Iterable[int]]]):
        self.groups = groups
        self.peaks: dict[str, int] = dict.fromkeys(groups, 0)  # KiB
        self.reset: dict[str, list[int]] = {}
        self.pids: dict[str, list[int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, name="rss-meter", daemon=True)

    def start(self) -> None:
        self.reset = {name: [pid for pid in pids() if _reset_peak(pid)] for name, pids in self.groups.items()}
        self._sample()
        self._thread.start()

    def stop(self) -> dict[str, float]:
        self._stop.set()
        self._thread.join()
        self._sample()
        for name, pids in self.reset.items():
            for pid in pids:
                self.peaks[name] = max(self.peaks[name], _status_kib(pid, "VmHWM"))
        return {name: kib / 1024 for name, kib in self.peaks.items()}

    def _sample(self, resolve: bool = True) -> None:
        """Each group's processes' RSS; with ``resolve``, which processes they are is looked up first
        (the meter's own work would otherwise take a share of the cores it measures)."""
        if resolve or not self.pids:
            self.pids = {name: list(pids()) for name, pids in self.groups.items()}
        for name, pids in self.pids.items():
            for pid in pids:
                self.peaks[name] = max(self.peaks[name], _status_kib(pid, "VmRSS"))

    def _poll(self) -> None:
        polls = 0
        while not self._stop.wait(POLL):
            polls += 1
            self._sample(resolve=polls % RESOLVE == 0)


def format_rss(peaks: dict[str, float]) -> str:
    """``peak RSS MiB gateway=84 students=97 ...`` (each group's largest process)."""
    return "peak RSS MiB " + " ".join(f"{name}={value:.0f}" for name, value in peaks.items())
