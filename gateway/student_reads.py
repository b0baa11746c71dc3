"""The gateway's read copy of students, for ``GET /students/{id}``.

Each gateway process keeps the students it has read or heard of (at most
``STUDENT_READ_CACHE_SIZE``, least recently read first out), fed by

- the students service's events (``student_created``, ``student_updated`` carry the
  student; ``student_deleted`` its id) and the status service's
  ``student_status_changed`` (a status and its version), through queues of this
  process's own (exclusive, deleted when it disconnects: every gateway process hears
  every event, and nothing piles up for a process that is gone);
- this process's own writes (create, update: the student the RPC answered; delete), and
  those of the other processes of the same gateway (``GATEWAY_PROCESSES``): a process that
  writes sends the student (or its deletion) to its siblings (:mod:`gateway.siblings`) before
  it answers, and each process takes in what it was sent at the start of every read;
- the RPC, on a miss.

A student carries two versions: ``version`` (its profile, which an update raises) and
``status_version`` (the status service's count of its status changes). An entry takes
the newer of each wherever it comes from, so events that arrive late, twice or out of
order never take it back. Events missed while this process's queues were gone (its
connection lost) cannot be known: while disconnected every read goes to the students
service, and on reconnection the copy starts empty::

    class GatewayService(StudentEvents):
        student_reads = StudentReads()

        def get_student(self, request, student_id):
            entry = self.student_reads.read(student_id, self.students.get_student)

        def update_student(self, request, student_id):
            student = self.students.update_student(student_id, ...)
            self.student_reads.wrote(student)  # here, and in this gateway's other processes
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson
from eventlet.hubs import trampoline
from nameko.events import BROADCAST, EventHandler
from nameko.extensions import DependencyProvider

from gateway.entrypoints import json_bytes
from gateway.siblings import Siblings
from services.exceptions import ValidationFailed
from services.infra.inbound import StoppableQueueConsumer
from services.infra.settings import Settings
from services.schemas import StudentCreatedSchema, StudentDeletedSchema, StudentUpdatedSchema, status_changes

__all__ = ["Entry", "StudentEvents", "StudentReads"]

log = logging.getLogger(__name__)

PROFILE, STATUS = "version", "status_version"
CREATED, UPDATED, DELETED = StudentCreatedSchema(), StudentUpdatedSchema(), StudentDeletedSchema()


class Entry:
    """A student as last known: the full student, or (``student`` None) only a status heard
    of before the rest; ``body`` is its answer, made at its first read."""

    __slots__ = ("_body", "status", "status_version", "student")

    def __init__(self, student: dict | None, status: str | None = None, status_version: int = 0):
        self.student = student
        self.status = student["status"] if student else status
        self.status_version = student[STATUS] if student else status_version
        self._body: bytes | None = None

    @property
    def tag(self) -> str:
        """Its ETag, unquoted: ``<version>.<status_version>``, which changes with the profile and with the status."""
        return f"{self.student[PROFILE]}.{self.student[STATUS]}"

    @property
    def etag(self) -> str:
        return f'"{self.tag}"'

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = json_bytes(self.student)
        return self._body

    def merged(self, student: dict) -> Entry:
        """The newer profile of the two, with the newer status."""
        profile = self.student if self.student and self.student[PROFILE] > student[PROFILE] else student
        if self.status_version > student[STATUS]:
            profile = {**profile, "status": self.status, STATUS: self.status_version}
        return Entry(profile)


class StudentReads(DependencyProvider):
    """The read copy (see the module's docstring); off with ``STUDENT_READ_CACHE_SIZE=0``."""

    def setup(self) -> None:
        self.max_entries = Settings.from_config(self.container.config).student_read_cache_size
        self.entries: OrderedDict[int, Entry | None] = OrderedDict()  # None: deleted
        self.generation = 0  # raised whenever the copy is dropped: a read begun before must not fill it
        self.live = False  # following the events (set by the consumer once its queues exist)
        directory = Settings.from_config(self.container.config).gateway_siblings_dir
        self.siblings = Siblings(directory) if directory and self.max_entries else None
        if self.siblings is not None:  # bound before the event queues exist, so before this copy is live
            self.siblings.open()
        self.listener = None

    def start(self) -> None:
        if self.siblings is not None:
            self.listener = self.container.spawn_managed_thread(self._listen)

    def stop(self) -> None:
        if self.listener is not None:
            self.listener.kill()
            self.listener = None
        if self.siblings is not None:
            self.siblings.close()

    kill = stop

    def get_dependency(self, worker_ctx: Any) -> StudentReads:
        return self

    def get(self, student_id: int) -> Entry | None:
        """The student, if this copy knows it whole and is following the events."""
        entry = self.entries.get(student_id)
        if entry is None or entry.student is None or not self.live:
            return None
        self.entries.move_to_end(student_id)
        return entry

    def read(self, student_id: int, fetch: Callable[[int], dict]) -> Entry:
        """The student from this copy, or else from ``fetch`` (the students service's
        ``get_student``, which raises ``StudentNotFound``), kept for the next read."""
        self.catch_up()  # a sibling's write answered before this request came is seen by it
        generation = self.generation
        return self.get(student_id) or self.fill(fetch(student_id), generation)

    def fill(self, student: dict, generation: int) -> Entry:
        """What the students service answered (a read begun at ``generation``), merged with what
        this copy heard meanwhile, and kept unless the copy was dropped or the student deleted since."""
        student_id = student["id"]
        if generation != self.generation or not self.live:
            return Entry(student)
        if student_id in self.entries and self.entries[student_id] is None:
            return Entry(student)  # read before its deletion
        return self._keep(student_id, self._merged(student_id, student))

    def put(self, student: dict) -> None:
        """A student as a write (ours, or an event) left it."""
        if self.live and self.entries.get(student["id"], True) is not None:
            self._keep(student["id"], self._merged(student["id"], student))

    def wrote(self, student: dict) -> None:
        """A student as this process's write (create, update) left it: kept, and sent to the
        other processes of this gateway before the write is answered."""
        self.put(student)
        self._tell({"student": student})

    def wrote_deletion(self, student_id: int) -> None:
        self.deleted(student_id)
        self._tell({"deleted": student_id})

    def catch_up(self) -> None:
        """Takes in every write the other processes of this gateway sent so far (no waiting, no
        switch to another greenthread: it ends before the read that called it goes on)."""
        if self.siblings is None:
            return
        for message in self.siblings.receive():
            try:
                write = orjson.loads(message)
                if "student" in write:
                    self.put(write["student"])
                else:
                    self.deleted(int(write["deleted"]))
            except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
                log.warning("a gateway sibling's message not understood (%s)", exc)

    def status_changed(self, student_id: int, status: str, status_version: int) -> None:
        if not self.live or (student_id in self.entries and self.entries[student_id] is None):
            return
        entry = self.entries.get(student_id)
        if entry is None:
            self._keep(student_id, Entry(None, status, status_version))
        elif status_version > entry.status_version:
            if entry.student is None:
                self._keep(student_id, Entry(None, status, status_version))
            else:
                self._keep(student_id, Entry({**entry.student, "status": status, STATUS: status_version}))

    def deleted(self, student_id: int) -> None:
        if self.live:
            self._keep(student_id, None)

    def restart(self, live: bool) -> None:
        """Drop everything: events may have been missed. ``live``: following them again."""
        self.entries.clear()
        self.generation += 1
        self.live = live and self.max_entries > 0

    def _tell(self, write: dict) -> None:
        if self.siblings is not None:
            self.siblings.send(json_bytes(write))

    def _listen(self) -> None:
        """Takes in the siblings' writes as they come too, between reads, so that their queue
        (10 messages by default) never stays full while this process has no reads to serve."""
        while True:
            trampoline(self.siblings.fileno(), read=True)
            self.catch_up()

    def _merged(self, student_id: int, student: dict) -> Entry:
        entry = self.entries.get(student_id)
        return Entry(student) if entry is None else entry.merged(student)

    def _keep(self, student_id: int, entry: Entry | None) -> Entry | None:
        self.entries[student_id] = entry
        self.entries.move_to_end(student_id)
        while len(self.entries) > self.max_entries:
            self.entries.popitem(last=False)
        return entry


class ReadCopyConsumer(StoppableQueueConsumer):
    """nameko's queue consumer on a connection of its own, which tells the read copies of its
    service when its queues are (re)declared — events published while they were gone are
    lost — and when its connection is lost."""

    def get_consumers(self, consumer_cls, channel):
        consumers = super().get_consumers(consumer_cls, channel)  # declares the queues
        self._restart(live=True)
        return consumers

    def consume(self, *args, **kwargs):
        try:
            yield from super().consume(*args, **kwargs)
        finally:
            self._restart(live=False)

    def _restart(self, live: bool) -> None:
        for dependency in self.container.dependencies:
            if isinstance(dependency, StudentReads):
                dependency.restart(live)


class Follow(EventHandler):
    """``@follow(source, event_type)``: this process hears every such event, from when it is
    connected (a broadcast queue of its own, exclusive and deleted when it disconnects)."""

    queue_consumer = ReadCopyConsumer()

    def __init__(self, source_service: str, event_type: str, **kwargs: Any):
        super().__init__(source_service, event_type, handler_type=BROADCAST, reliable_delivery=False, **kwargs)


follow = Follow.decorator


class StudentEvents:
    """The events that feed ``GatewayService``'s ``student_reads``. A malformed event is
    logged and changes nothing."""

    @follow("students", "student_created")
    def handle_student_created(self, payload: dict) -> None:
        self.student_reads.put(_valid(CREATED, payload)["student"])

    @follow("students", "student_updated")
    def handle_student_updated(self, payload: dict) -> None:
        self.student_reads.put(_valid(UPDATED, payload)["student"])

    @follow("students", "student_deleted")
    def handle_student_deleted(self, payload: dict) -> None:
        self.student_reads.deleted(_valid(DELETED, payload)["student_id"])

    @follow("status", "student_status_changed")
    def handle_student_status_changed(self, payload: dict) -> None:
        for change in status_changes(payload):
            self.student_reads.status_changed(change["student_id"], change["to_status"], change["version"])


def _valid(schema: Any, payload: Any) -> dict:
    """``payload`` itself (the student as published, its dates as text) once ``schema`` accepts it."""
    errors = schema.validate(payload) if isinstance(payload, dict) else {"_schema": ["Not an object."]}
    if errors:
        raise ValidationFailed("Malformed event.", errors)
    return payload
