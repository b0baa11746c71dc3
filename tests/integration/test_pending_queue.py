"""The applier's queue (``status_pending``) stays exact: whichever way requests are
recorded (one by one, many at once, a job's rows by COPY), settled (applied, rejected, refused as
a job's duplicate, a student unknown) or dropped (an upload discarded), it holds exactly the
pending requests, on SQLite and PostgreSQL as the migrations make them. On PostgreSQL applying a
request updates its row in place (HOT): no indexed column changes."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import sessionmaker

from services._status import batches, jobs_repo
from services._status import repo as status_repo
from services._status.models import StatusPending, StatusRequest
from services.infra.db import build_engine
from tests.conftest import make_db_uris
from tests.unit.test_services import submit, track


@pytest.fixture(params=["sqlite", "postgresql"])
def factory(request, tmp_path):
    engine = build_engine(make_db_uris(request.param, tmp_path, request)["status:StatusBase"])
    yield sessionmaker(bind=engine, expire_on_commit=False)
    engine.dispose()


def queue_and_pending(factory) -> tuple[list[tuple], list[tuple]]:
    """The queue's rows, and the pending requests as the queue should hold them."""
    with factory() as session:
        queue = session.execute(
            select(StatusPending.seq, StatusPending.student_id, StatusPending.job_id).order_by(StatusPending.seq)
        ).all()
        pending = session.execute(
            select(StatusRequest.seq, StatusRequest.student_id, StatusRequest.job_id)
            .where(StatusRequest.state == status_repo.PENDING)
            .order_by(StatusRequest.seq)
        ).all()
    return queue, pending


def gateway_command(student_id: int, target: str) -> dict:
    return {"request_id": str(uuid.uuid4()), "student_id": student_id, "status": target, "actor": "tester"}


def test_the_queue_holds_exactly_the_pending_requests(factory):
    track(factory, 1, 2)
    submit(factory, 1, "active")  # one by one (the ORM)
    repeated = gateway_command(2, "active")
    status_repo.submit_many(factory, [repeated, gateway_command(1, "suspended")])  # many at once
    status_repo.submit_many(factory, [repeated])  # redelivered: nothing new, in the queue or out
    job = jobs_repo.create(factory, None, "tester")
    # students 2 and 7 in turn, each alternating; row 300 repeats student 7's row 298: a duplicate
    rows = [[n, 2 if n % 2 else 7, ("active", "suspended")[(n // 2) % 2], None] for n in range(1, 301)]
    rows[-1][2] = rows[-3][2]
    with factory.begin() as session:  # a job's rows: COPY on PostgreSQL from 200 rows
        jobs_repo.add_rows(session, job.job_id, job.upload, rows, [])
    dropped = jobs_repo.create(factory, None, "tester")
    with factory.begin() as session:
        jobs_repo.add_rows(session, dropped.job_id, dropped.upload, [[1, 1, "active", None]], [])
    queue, pending = queue_and_pending(factory)
    assert len(queue) == 3 + 300 + 1 and queue == pending

    with factory.begin() as session:
        jobs_repo.discard(session, dropped.job_id, dropped.upload)  # the upload's rows deleted
        jobs_repo.seal(session, job.job_id, job.upload, 300)  # repeats refused as DUPLICATE_ROW
    queue, pending = queue_and_pending(factory)
    assert queue == pending and len(queue) == 3 + 299, "the discarded row and the job's duplicate left the queue"

    with factory.begin() as session:
        assert batches.reject_unknown(session, 7) == 149  # student 7 does not exist: its rows rejected
    queue, pending = queue_and_pending(factory)
    assert queue == pending and {student for _, student, _ in queue} <= {1, 2}

    with factory.begin() as session:
        batches.apply_pending(session, 1000)
    assert queue_and_pending(factory) == ([], [])


def test_a_repeated_or_overlapping_chunk_records_each_row_once(factory):
    """A job's rows go straight in by COPY on PostgreSQL: a chunk sent again, or one overlapping
    rows already recorded or repeating a row number within itself, still adds each row number
    once (its first version) and queues each once."""
    track(factory, 1, 2)
    job = jobs_repo.create(factory, None, "tester")
    first = [[n, 1 + n % 2, "active", f"first {n}"] for n in range(1, 301)]
    with factory.begin() as session:
        assert jobs_repo.add_rows(session, job.job_id, job.upload, first, []) == 300
    with factory.begin() as session:  # the same chunk again (a retried call)
        jobs_repo.add_rows(session, job.job_id, job.upload, first, [])
    overlapping = [[n, 1 + n % 2, "suspended", f"second {n}"] for n in range(201, 501)]
    overlapping.append([450, 1, "completed", "repeated within the chunk"])
    with factory.begin() as session:
        jobs_repo.add_rows(session, job.job_id, job.upload, overlapping, [])
    with factory() as session:
        recorded = session.execute(
            select(StatusRequest.row_no, StatusRequest.reason)
            .where(StatusRequest.job_id == job.job_id)
            .order_by(StatusRequest.row_no)
        ).all()
    assert [row_no for row_no, _ in recorded] == list(range(1, 501))
    assert {reason for row_no, reason in recorded if row_no <= 300} == {f"first {n}" for n in range(1, 301)}
    assert {reason for row_no, reason in recorded if row_no > 300} == {f"second {n}" for n in range(301, 501)}
    queue, pending = queue_and_pending(factory)
    assert len(queue) == 500 and queue == pending
    with factory.begin() as session:
        jobs_repo.seal(session, job.job_id, job.upload, 500)


def test_applying_a_request_updates_its_row_in_place_on_postgresql(factory):
    with factory() as session:
        if session.get_bind().dialect.name != "postgresql":
            return  # HOT updates are PostgreSQL's; the queue itself is checked above on both
    track(factory, *range(1, 51))
    for student_id in range(1, 51):
        submit(factory, student_id, "active")
    with factory.begin() as session:
        assert batches.apply_pending(session, 100).applied == 50
        updated, in_place = session.execute(
            text("SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_xact_user_tables WHERE relname = 'status_requests'")
        ).one()
    assert (updated, in_place) == (50, 50)


def test_a_batch_reads_its_own_requests_not_the_applied_history(factory):
    """A batch reads its requests by their keys: however many requests were applied before it,
    PostgreSQL fetches about as many rows of ``status_requests`` as the batch holds (a join of the
    queue to the requests could be planned as a merge of their keys, walking every applied one)."""
    with factory() as session:
        if session.get_bind().dialect.name != "postgresql":
            return  # the plans are PostgreSQL's; the batch's result is checked on both above
    track(factory, 1, 2, 3)
    job = jobs_repo.create(factory, None, "tester")
    rows = [[n, 1 + n % 3, ("active", "suspended")[(n // 3) % 2], None] for n in range(1, 6001)]
    with factory.begin() as session:
        jobs_repo.add_rows(session, job.job_id, job.upload, rows, [])
    with factory.begin() as session:
        jobs_repo.seal(session, job.job_id, job.upload, len(rows))  # fresh statistics, as after any large job
    for _ in range(5):
        with factory.begin() as session:
            assert batches.apply_pending(session, 1000).handled == 1000
    # read twice in the batch's transaction: the backend's counts not yet reported are in it too
    read = text("SELECT idx_tup_fetch + seq_tup_read FROM pg_stat_xact_user_tables WHERE relname = 'status_requests'")
    with factory.begin() as session:
        before = session.scalar(read)
        assert batches.apply_pending(session, 100).handled == 100
        fetched = session.scalar(read) - before
    assert 100 <= fetched <= 300, f"{fetched} rows of status_requests read for a batch of 100 after 5,000 applied"
