"""A service's start-up heap frozen out of the garbage collector's passes (``FrozenStartupHeap``)."""

from __future__ import annotations

import gc
import weakref

import pytest

from gateway.service import GatewayService
from services.certificates import CertificatesService
from services.infra.heap import FrozenStartupHeap
from services.notifications import NotificationsService
from services.status import StatusService
from services.students import StudentsService


class Node:
    """An object that can be part of a reference cycle and watched with a weak reference."""

    other: Node | None = None


class HeapService:
    name = "heap"
    heap = FrozenStartupHeap()


def cycle() -> weakref.ref:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_start_freezes_what_exists_and_later_cycles_are_still_collected(container_factory):
    before = cycle()  # garbage already, not yet collected: start's collection frees it
    alive = [Node()]
    container = container_factory(HeapService, {})
    assert gc.get_freeze_count() == 0
    container.start()

    assert before() is None
    assert gc.get_freeze_count() > 1000  # modules, classes, this test's objects...
    assert not any(obj is alive for obj in gc.get_objects())  # frozen: out of every generation
    later = cycle()
    assert later() is not None
    gc.collect()
    assert later() is None  # made after start: collected as ever


@pytest.mark.parametrize(
    "service", [StudentsService, StatusService, CertificatesService, NotificationsService, GatewayService]
)
def test_every_service_freezes_its_start_up_heap(service):
    assert any(isinstance(value, FrozenStartupHeap) for value in vars(service).values())
