"""Bulk jobs in the status database (SQLite file): rows held back until the seal,
duplicates refused, progress counted, interrupted uploads started afresh."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Text, cast, select

from services import jobs
from services._status import batches, jobs_repo
from services._status import repo as status_repo
from services._status.models import StatusBase, StatusOutbox
from services.exceptions import JobNotFound, JobUploadSuperseded, ValidationFailed
from services.infra.db import json_dumps
from services.schemas import JobRowSchema
from tests.unit.test_services import make_session_factory, track


@pytest.fixture
def db(tmp_path):
    factory = make_session_factory(tmp_path, "status", StatusBase)
    yield factory
    factory.kw["bind"].dispose()


def apply_all(db) -> None:
    while True:
        with db.begin() as session:
            if not batches.apply_pending(session, 100).handled:
                return


def upload(db, rows, errors=(), key=None) -> jobs_repo.Upload:
    job = jobs_repo.create(db, key, "registrar")
    with db.begin() as session:
        jobs_repo.add_rows(session, job.job_id, job.upload, list(rows), list(errors))
    return job


def progress(db, job_id: str) -> dict:
    with db() as session:
        return jobs_repo.progress(session, job_id, 10)


def test_rows_wait_for_the_seal_then_apply_in_row_order_with_duplicates_refused(db):
    track(db, 1, 2)
    rows = [[1, 1, "active", "a"], [2, 1, "active", "again"], [3, 2, "completed", None], [4, 1, "suspended", None]]
    job = upload(db, rows, errors=[jobs.invalid(5, {"status": ["Must be one of: ..."]})])
    apply_all(db)
    assert progress(db, job.job_id)["state"] == "receiving" and progress(db, job.job_id)["pending"] == 4  # held back

    with db.begin() as session:
        jobs_repo.seal(session, job.job_id, job.upload, 5)
    apply_all(db)

    done = progress(db, job.job_id)
    counts = [done[key] for key in ("state", "total", "pending", "applied", "rejected", "failed")]
    assert counts == ["done", 5, 0, 2, 3, 0]
    assert [(e["row"], e["code"]) for e in done["errors"]] == [
        (2, "DUPLICATE_ROW"),
        (3, "INVALID_TRANSITION"),
        (5, "VALIDATION_ERROR"),
    ]
    assert done["errors"][0]["message"] == "Repeats row 1 for the same student."
    assert done["finished_at"] and done["rows_per_second"] > 0
    with db() as session:
        assert [h.to_status for h in status_repo.history_page(session, 1, 10, None)[0]] == ["active", "suspended"]


def test_a_seal_that_does_not_add_up_is_refused(db):
    job = upload(db, [[1, 1, "active", None]])
    with pytest.raises(ValidationFailed) as raised, db.begin() as session:
        jobs_repo.seal(session, job.job_id, job.upload, 2)
    assert raised.value.details == {"total": 2, "received": 1}


def test_a_repeated_key_returns_a_sealed_job_and_restarts_an_interrupted_upload(db):
    track(db, 1)
    interrupted = upload(db, [[1, 1, "active", None]], key="k1")
    again = jobs_repo.create(db, "k1", "registrar")
    assert again.job_id == interrupted.job_id and again.upload != interrupted.upload and again.created
    assert progress(db, again.job_id)["total"] == 0  # its rows were dropped
    with pytest.raises(JobUploadSuperseded), db.begin() as session:  # the old upload may not go on
        jobs_repo.add_rows(session, interrupted.job_id, interrupted.upload, [[2, 1, "active", None]], [])

    with db.begin() as session:
        jobs_repo.add_rows(session, again.job_id, again.upload, [[1, 1, "active", None]], [])
        jobs_repo.seal(session, again.job_id, again.upload, 1)
    repeat = jobs_repo.create(db, "k1", "registrar")
    assert (repeat.job_id, repeat.created) == (again.job_id, False)


def test_a_discarded_upload_leaves_nothing(db):
    track(db, 1)
    job = upload(db, [[1, 1, "active", None]], errors=[jobs.invalid(2, {})])
    with db.begin() as session:
        jobs_repo.discard(session, job.job_id, job.upload)
    apply_all(db)
    with pytest.raises(JobNotFound), db() as session:
        jobs_repo.progress(session, job.job_id, 10)
    with db() as session:
        assert status_repo.current(session, 1).status == "enrolled"


@pytest.mark.parametrize(
    ("rows", "errors"),
    [
        ([[1, 1, "retired", None]], []),
        ([[1, True, "active", None]], []),
        ([[1, 1, "active"]], []),
        ([[1, 1, "active", "x" * 1001]], []),
        ([], [[1, "CODE", "message", "not a dict"]]),
        ("not a list", []),
    ],
)
def test_malformed_rows_are_refused_before_anything_is_written(db, rows, errors):
    job = jobs_repo.create(db, None, None)
    with pytest.raises(ValidationFailed), db.begin() as session:
        jobs_repo.add_rows(session, job.job_id, job.upload, rows, errors)
    assert progress(db, job.job_id)["total"] == 0


def test_rpc_rows_are_checked_and_emails_resolved_in_batches():
    lookups = []

    def resolve(emails):
        lookups.append(emails)
        return {"ana@example.org": 7}

    rows = [
        {"student_id": 3, "status": "active"},
        {"email": "ANA@example.org", "status": "active", "reason": "r"},
        {"email": "nobody@example.org", "status": "active"},
        {"student_id": 3, "email": "ana@example.org", "status": "active"},
        {"status": "retired"},
        "not a row",
    ]
    accepted, refused = jobs.check_rows(rows, JobRowSchema(), resolve)
    assert accepted == [[1, 3, "active", None], [2, 7, "active", "r"]]
    assert [(r[0], r[1]) for r in refused] == [
        (3, "STUDENT_NOT_FOUND"),
        (4, "VALIDATION_ERROR"),
        (5, "VALIDATION_ERROR"),
        (6, "VALIDATION_ERROR"),
    ]
    assert lookups == [["ana@example.org", "nobody@example.org"]]


def test_a_batch_s_events_are_split_into_messages_the_consumers_take(db):
    """Long reasons beyond ASCII (four bytes a character in UTF-8) make one batch several messages,
    each within the size given, the changes in order across them."""
    track(db, *range(1, 11))
    reasons = ["😀" * 1000, "ç" * 1000, 'a"\\\n' * 250, None, "x" * 1000] * 2
    rows = [[n, n, "active", reason] for n, reason in enumerate(reasons, start=1)]
    job = upload(db, rows)
    with db.begin() as session:
        jobs_repo.seal(session, job.job_id, job.upload, len(rows))
    with db.begin() as session:
        assert batches.apply_pending(session, 100, message_bytes=10_000).events == 10
    with db() as session:
        bodies = session.scalars(select(cast(StatusOutbox.payload, Text)).order_by(StatusOutbox.id)).all()
    assert len(bodies) > 1
    assert all(len(body.encode()) <= 10_000 for body in bodies)  # the text the relay publishes
    messages = [json.loads(body) for body in bodies]
    changes = [change for payload in messages for change in payload["changes"]]
    assert [(c["student_id"], c["reason"]) for c in changes] == [(n, reason) for n, _, _, reason in rows]


@settings(max_examples=300, deadline=None)
@given(
    changes=st.lists(
        st.dictionaries(
            st.sampled_from(["student_id", "reason", "actor", "course", "version", "traceparent"]),
            st.one_of(
                st.none(),
                st.integers(-(2**70), 2**70),  # past 64 bits too: no shortcut there
                st.text(max_size=300),
                st.text(alphabet=st.sampled_from('a"\\\x00\x1f\x7f\x80ç€😀:,'), max_size=300),
            ),
        ),
        max_size=40,
    ),
    limit=st.integers(100, 20_000),
)
@example(changes=[{"reason": "\x7f" * 100}] * 2, limit=400)  # DEL: one byte compact, six escaped
@example(changes=[{"reason": "😀" * 100}] * 2, limit=2000)  # four bytes in UTF-8, twelve escaped
def test_split_by_size_keeps_every_change_in_order_and_each_part_within_the_limit(changes, limit):
    parts = batches.split_by_size(changes, limit)
    assert [change for part in parts for change in part] == changes
    for part in parts:
        assert len(part) == 1 or len(json_dumps({"changes": part}).encode()) <= limit
