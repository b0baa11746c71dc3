"""Every service's migrations, run from nothing, build the schema its models declare (tables,
columns, indexes, unique constraints): a model changed without its migration fails here."""

from __future__ import annotations

import importlib

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from services.infra.db import build_engine
from tools.migrate import HISTORIES, upgrade

BASES = {
    "students": "services._students.models:StudentsBase",
    "status": "services._status.models:StatusBase",
    "certificates": "services._certificates.models:CertificatesBase",
    "notifications": "services._notifications.models:NotificationsBase",
    "gateway": "gateway.access.models:GatewayBase",
}


def base_of(service: str):
    module, name = BASES[service].split(":")
    return getattr(importlib.import_module(module), name)


def differences(engine, metadata) -> list:
    with engine.connect() as connection:
        return compare_metadata(MigrationContext.configure(connection, opts={"compare_type": False}), metadata)


@pytest.mark.parametrize("service", list(HISTORIES))
def test_the_migrations_build_what_the_models_declare(service, tmp_path):
    uri = f"sqlite:///{tmp_path}/{service}.db"
    upgrade({"DB_URIS": {HISTORIES[service]: uri}}, services=(service,))
    engine = build_engine(uri)
    try:
        assert differences(engine, base_of(service).metadata) == []
    finally:
        engine.dispose()
