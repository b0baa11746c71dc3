"""Less work for the garbage collector in a service process (:class:`LeanHeap`).

CPython frees most objects by reference counting; its cyclic collector exists for the rest
(reference cycles), and it walks the tracked objects to find them. In a busy service it had
three costs, measured in the gateway at 64 clients (``benchmarks/README.md``, round nine):

- **The start-up heap walked again and again.** A service holds 120,000 to 160,000 objects
  from start-up on (modules, schemas, the routing map, SQLAlchemy's metadata), alive as long
  as the process. Every full collection walked them all: ≈ 150 ms of one core each, every few
  seconds, the whole process stopped meanwhile (a pause every request in flight shares).
  A moment after the service has started (:data:`SETTLE_SECONDS`: its start, which must stay
  quick, is not held up), one full collection, then every object alive is moved into the
  collector's permanent generation (:func:`gc.freeze`): later collections walk only what was
  made since. Frozen objects are still freed as soon as nothing refers to them; only a cycle
  among them would never be collected, and start-up state lives as long as the process.
- **Every worker a reference cycle.** nameko's worker context holds the service instance, whose
  injected dependencies (RPC proxies, dispatchers) hold the worker context again, so nothing a
  worker made (its request, headers, proxies, about 40 objects in the gateway) was freed until a
  collection found the cycle. At teardown the worker context lets go of the instance: reference
  counting frees them when the worker ends.
- **Collections of the young generation every 700 allocations.** With the cycles gone, what a
  worker allocates is freed as it goes, so a larger threshold (:data:`YOUNG_THRESHOLD`) makes
  collections rare without letting garbage pile up.
"""

from __future__ import annotations

import gc
import logging
import time
from typing import Any

import eventlet
from nameko.extensions import DependencyProvider

log = logging.getLogger(__name__)

YOUNG_THRESHOLD = 7_000  # CPython's default is 700; the older generations keep theirs
# after the container's start: every extension has started by then, and a SIGTERM that comes while
# they start finds none held up by a collection (a full one takes 100-200 ms, the hub stopped)
SETTLE_SECONDS = 1.0


class LeanHeap(DependencyProvider):
    """``heap = LeanHeap()`` on a service: its start-up heap frozen once its container has started,
    each worker's context untied from the service instance at teardown, and a larger young
    generation. Several containers in one process each freeze what exists then."""

    settle = SETTLE_SECONDS

    def start(self) -> None:
        self.container.spawn_managed_thread(self._freeze, identifier="lean heap")

    def _freeze(self) -> None:
        eventlet.sleep(self.settle)
        started = time.perf_counter()
        gc.collect()
        gc.freeze()
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
        log.debug(
            "%d objects frozen out of the garbage collector's passes in %.0f ms",
            gc.get_freeze_count(),
            1000 * (time.perf_counter() - started),
        )

    def worker_teardown(self, worker_ctx: Any) -> None:
        # the instance's dependencies refer to the worker context: without this, a cycle
        worker_ctx.service = None
