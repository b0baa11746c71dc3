"""The outbox relay publishes every row, oldest first, in batches, and reads the table no more
often than it must: a read that found less than a batch was all there was."""

from __future__ import annotations

from unittest.mock import MagicMock

import pytest
from sqlalchemy import event

from services._status.models import StatusBase, StatusOutbox
from services.infra import outbox
from services.infra.outbox import OutboxRelay
from tests.unit.test_services import make_session_factory


@pytest.fixture
def status_db(tmp_path):
    factory = make_session_factory(tmp_path, "status", StatusBase)
    yield factory
    factory.kw["bind"].dispose()


def relay_counting_reads(status_db) -> tuple[OutboxRelay, list[str]]:
    relay = OutboxRelay(status_db, StatusOutbox, {"AMQP_URI": "amqp://nowhere/"}, "status")
    relay.declared, relay.publisher = True, MagicMock()  # no broker: what would be published
    reads: list[str] = []

    def count(conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("SELECT") and "outbox" in statement:
            reads.append(statement)

    event.listen(status_db.kw["bind"], "before_cursor_execute", count)
    return relay, reads


def add(status_db, n: int, first: int = 0) -> None:
    with status_db.begin() as session:
        session.add_all(StatusOutbox(event_type="student_status_changed", payload={"n": first + i}) for i in range(n))


def published(relay) -> list[int]:
    return [int(call.args[0].split(":")[1].rstrip("}")) for call in relay.publisher.publish.call_args_list]


def test_less_than_a_batch_is_read_once_published_in_order_and_deleted(status_db):
    relay, reads = relay_counting_reads(status_db)
    add(status_db, 3)

    assert relay.flush() == 3
    assert published(relay) == [0, 1, 2]
    assert len(reads) == 1, "the read found less than a batch: nothing more to read"
    with status_db() as session:
        assert session.query(StatusOutbox).count() == 0

    add(status_db, 2, first=3)  # written after: its writer wakes the relay again
    assert relay.flush() == 2
    assert published(relay) == [0, 1, 2, 3, 4]


def test_a_full_batch_is_followed_by_another_read(status_db, monkeypatch):
    monkeypatch.setattr(outbox, "BATCH_SIZE", 2)
    relay, reads = relay_counting_reads(status_db)
    relay.unsent = relay.unsent.limit(2)  # built with the module's batch size
    add(status_db, 5)

    assert relay.flush() == 5
    assert published(relay) == [0, 1, 2, 3, 4]
    assert len(reads) == 3, "2 + 2 + 1: the third read found less than a batch"

    add(status_db, 4, first=5)
    assert relay.flush() == 4
    assert published(relay)[5:] == [5, 6, 7, 8]
    assert len(reads) == 6, "2 + 2, then a read that found nothing"
