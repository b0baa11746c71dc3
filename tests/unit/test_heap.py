"""Less work for the garbage collector in a service process (``LeanHeap``)."""

from __future__ import annotations

import gc
import time
import weakref

import eventlet
import pytest
from nameko.rpc import RpcProxy, rpc
from nameko.testing.services import entrypoint_hook

from gateway.service import GatewayService
from services.certificates import CertificatesService
from services.infra.heap import SETTLE_SECONDS, YOUNG_THRESHOLD, LeanHeap
from services.notifications import NotificationsService
from services.status import StatusService
from services.students import StudentsService

WORKERS: list[weakref.ref] = []  # each worker's request object, watched


class Node:
    """An object that can be part of a reference cycle and be watched with a weak reference."""

    other: Node | None = None


def cycle() -> weakref.ref:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


class HeapService:
    name = "heap"
    heap = LeanHeap()
    students = RpcProxy("students")  # refers to the worker context, as every injected proxy does

    @rpc
    def work(self) -> str:
        made = Node()
        self.made = made  # the instance holds what the worker made, as a request's attributes do
        WORKERS.append(weakref.ref(made))
        return "done"


class PlainService:
    name = "plain"
    students = RpcProxy("students")

    @rpc
    def work(self) -> str:
        made = Node()
        self.made = made
        WORKERS.append(weakref.ref(made))
        return "done"


def test_start_freezes_what_exists_and_later_cycles_are_still_collected(container_factory, rabbit_config):
    before = cycle()  # garbage already, not yet collected: start's collection frees it
    alive = [Node()]
    container = container_factory(HeapService, rabbit_config)
    assert gc.get_freeze_count() == 0
    container.start()
    assert gc.get_freeze_count() == 0, "not while the container starts"
    deadline = time.monotonic() + 10 * SETTLE_SECONDS
    while not gc.get_freeze_count() and time.monotonic() < deadline:
        eventlet.sleep(0.05)

    assert before() is None
    assert gc.get_freeze_count() > 1000  # modules, classes, this test's objects...
    assert not any(obj is alive for obj in gc.get_objects())  # frozen: out of every generation
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD
    later = cycle()
    assert later() is not None
    gc.collect()
    assert later() is None  # made after start: collected as ever


@pytest.mark.parametrize(("service", "freed"), [(HeapService, True), (PlainService, False)])
def test_what_a_worker_made_is_freed_when_it_ends_without_a_collection(
    service, freed, container_factory, rabbit_config
):
    container = container_factory(service, rabbit_config)
    container.start()
    WORKERS.clear()
    gc.disable()  # nothing but reference counting frees anything from here
    try:
        with entrypoint_hook(container, "work") as work:
            assert work() == "done"
        container.stop()  # every worker thread ended
        assert (WORKERS[0]() is None) is freed  # without LeanHeap: held by the worker's cycle
    finally:
        gc.enable()


@pytest.mark.parametrize(
    "service", [StudentsService, StatusService, CertificatesService, NotificationsService, GatewayService]
)
def test_every_service_keeps_a_lean_heap(service):
    assert any(isinstance(value, LeanHeap) for value in vars(service).values())
