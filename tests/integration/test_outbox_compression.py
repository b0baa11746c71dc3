"""On PostgreSQL a batch's events (one outbox row, up to 1 MiB of JSON) are compressed with lz4,
not pglz (half the time to store): in every service's outbox, whether the table was made by the
migrations or by ``create_all``; the migration's downgrade gives pglz back."""

from __future__ import annotations

import os

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from services._certificates.models import CertificatesBase, CertificatesOutbox
from services._status.models import StatusBase, StatusOutbox
from services._students.models import StudentsBase, StudentsOutbox
from services.infra.db import build_engine
from tests.conftest import _pg_admin, pg_admin_uri
from tools.migrate import HISTORIES, ROOT, upgrade

OUTBOXES = {
    "students": (StudentsBase, StudentsOutbox),
    "status": (StatusBase, StatusOutbox),
    "certificates": (CertificatesBase, CertificatesOutbox),
}
BATCH = {"changes": [{"student_id": n, "status": "active", "reason": f"row {n}" * 3} for n in range(5_000)]}


def lz4_available(engine) -> bool:
    with engine.connect() as connection:
        return connection.scalar(
            text("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        )


def stored_with(engine, outbox) -> str:
    """How PostgreSQL stored a large payload just written through the model."""
    with Session(engine) as session, session.begin():
        row = outbox(event_type="student_status_changed", payload=BATCH)
        session.add(row)
        session.flush()
        query = text("SELECT pg_column_compression(payload) FROM outbox WHERE id = :id")
        method = session.scalar(query, {"id": row.id})
        session.rollback()
    return method


@pytest.fixture
def database():
    """A PostgreSQL database of the test's own, dropped after."""
    name = f"mensageria_test_{os.getpid()}_compression"
    _pg_admin([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'])
    yield make_url(pg_admin_uri()).set(database=name).render_as_string(False)
    _pg_admin([f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'])


@pytest.mark.parametrize("service", list(OUTBOXES))
def test_a_batch_of_events_is_stored_compressed_with_lz4(service, postgres_uris, database):
    base, outbox = OUTBOXES[service]
    migrated = build_engine(postgres_uris[HISTORIES[service]])
    created = build_engine(database)
    try:
        if not lz4_available(migrated):
            pytest.fail("this PostgreSQL is built without lz4: the outbox keeps pglz there, nothing to check")
        base.metadata.create_all(created)
        assert stored_with(migrated, outbox) == "lz4"
        assert stored_with(created, outbox) == "lz4"
    finally:
        migrated.dispose()
        created.dispose()


def test_the_downgrade_gives_pglz_back(database):
    upgrade({"DB_URIS": {HISTORIES["status"]: database}}, services=("status",))
    engine = build_engine(database)
    try:
        assert stored_with(engine, StatusOutbox) == "lz4"
        config = Config(str(ROOT / "alembic.ini"), ini_section="status")
        config.set_main_option("script_location", str(ROOT / "migrations" / "status"))
        config.set_main_option("sqlalchemy.url", database.replace("%", "%%"))
        command.downgrade(config, "0009")
        assert stored_with(engine, StatusOutbox) == "pglz"
    finally:
        engine.dispose()
