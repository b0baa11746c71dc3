"""What a service's start-up made, kept out of the garbage collector's passes.

A service holds some 120,000 to 160,000 objects from start-up on (modules, schemas, the
routing map, SQLAlchemy's metadata and caches), and they live as long as the process.
CPython's collector still walks all of them in every full collection, which a busy service
runs every few seconds to free the reference cycles its requests leave behind: in the
gateway at 64 clients that was ≈ 150 ms of one core per collection, the whole process
stopped meanwhile: 8 to 10% of its CPU, and a pause every request in flight shares
(``benchmarks/README.md``, round nine).

:class:`FrozenStartupHeap` collects once when the service starts, then moves every object
alive into the collector's permanent generation (:func:`gc.freeze`): later collections only
walk what was made since. Frozen objects are still freed as soon as nothing refers to them;
only a reference cycle among them would never be collected, and start-up state is not
thrown away while the process runs.
"""

from __future__ import annotations

import gc
import logging
import time

from nameko.extensions import DependencyProvider

log = logging.getLogger(__name__)


class FrozenStartupHeap(DependencyProvider):
    """``heap = FrozenStartupHeap()`` on a service: when its container starts (every extension set
    up), one full collection, then :func:`gc.freeze`. Several containers in one process each
    freeze what exists when they start."""

    def start(self) -> None:
        started = time.perf_counter()
        gc.collect()
        gc.freeze()
        log.debug(
            "%d objects frozen out of the garbage collector's passes in %.0f ms",
            gc.get_freeze_count(),
            1000 * (time.perf_counter() - started),
        )
