"""Two status instances on PostgreSQL: the one that finds a student's earlier requests held
by the other (``SKIP LOCKED`` passed them over) leaves that student's later ones for the
next round, so every student's requests apply in arrival order. Deterministic: the other
instance's hold is a transaction this test keeps open."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from services._status import batches
from services._status import repo as status_repo
from services._status.models import StatusHistory, StatusPending, StatusRequest
from services.infra.db import build_engine
from tests.conftest import make_db_uris
from tests.unit.test_services import submit, track


def test_later_requests_wait_while_another_instance_holds_earlier_ones(request, tmp_path):
    uri = make_db_uris("postgresql", tmp_path, request)["status:StatusBase"]
    engine = build_engine(uri)
    factory = sessionmaker(bind=engine, expire_on_commit=False)
    try:
        track(factory, 1, 2)
        first = submit(factory, 1, "active")
        other = submit(factory, 2, "active")
        later = submit(factory, 1, "suspended")  # valid only after `first`

        holder = factory()  # instance A: has taken `first` (its place in the queue) and not committed yet
        taken = select(StatusRequest.seq).where(StatusRequest.id == first).scalar_subquery()
        holder.execute(select(StatusPending.seq).where(StatusPending.seq == taken).with_for_update())
        try:
            with factory.begin() as session:  # instance B
                taken = batches.apply_pending(session, 10)
            assert (taken.applied, taken.rejected) == (1, 0), "only student 2's request, not student 1's later one"
            with factory() as session:
                assert status_repo.get_request(session, other).state == "applied"
                assert status_repo.get_request(session, later).state == "pending"
        finally:
            holder.rollback()
            holder.close()

        with factory.begin() as session:
            batches.apply_pending(session, 10)
        with factory() as session:
            assert [status_repo.get_request(session, r).state for r in (first, later)] == ["applied", "applied"]
            history = session.scalars(
                select(StatusHistory.to_status).where(StatusHistory.student_id == 1).order_by(StatusHistory.id)
            ).all()
        assert history == ["active", "suspended"]
    finally:
        engine.dispose()
