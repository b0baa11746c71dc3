"""Shared fixtures.

- ``db_uris``: a fresh SQLite pair per test, or the PostgreSQL pair (created and
  migrated once per session, truncated per test); integration and e2e tests
  are parametrized over both backends.
- ``config``: a complete service config on a per-test RabbitMQ vhost (nameko's
  ``rabbit_config``) and those databases.
"""

from __future__ import annotations

import functools
import gc
import os
import tempfile
import uuid

import pytest
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from tools.migrate import HISTORIES, upgrade

BACKENDS = ("sqlite", "postgresql")
# per test session, so that concurrent sessions on one server never meet
SERVICES = ("students", "status", "certificates", "notifications", "gateway")
API_KEY_SECRET = "test-api-key-secret"


@functools.cache
def signing_key_path() -> str:
    """A certificate signing key for this test process (RSA 2048, made once, mode 0600)."""
    from services.credentials import generate_signing_key

    path = os.path.join(tempfile.mkdtemp(prefix="mensageria-test-key-"), "signing-key.pem")
    generate_signing_key(path, bits=2048)
    return path


PG_DATABASES = {service: f"mensageria_test_{os.getpid()}_{service}" for service in SERVICES}


@pytest.fixture(autouse=True)
def _collector_takes_back_what_services_froze():
    """A service container started in this process freezes the heap and raises the collector's
    threshold (``LeanHeap``): after each test the collector gets both back as they were, so that
    the test process's own garbage stays collectable."""
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


def pytest_collection_modifyitems(items):
    for item in items:
        path = str(item.fspath)
        if "/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/e2e/" in path:
            item.add_marker(pytest.mark.e2e)


def pg_admin_uri() -> str:
    return os.environ.get("TEST_POSTGRES_URI", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def _uris(paths: dict[str, str]) -> dict[str, str]:
    return {HISTORIES[service]: uri for service, uri in paths.items()}


def _pg_admin(statements: list[str]) -> None:
    engine = create_engine(make_url(pg_admin_uri()), isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        for statement in statements:
            connection.execute(text(statement))
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_uris():
    drops = [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)' for name in PG_DATABASES.values()]
    _pg_admin(drops + [f'CREATE DATABASE "{name}"' for name in PG_DATABASES.values()])
    admin = make_url(pg_admin_uri())
    uris = _uris({service: admin.set(database=name).render_as_string(False) for service, name in PG_DATABASES.items()})
    upgrade({"DB_URIS": uris})
    yield uris
    _pg_admin(drops)


def truncate(uris: dict[str, str]) -> None:
    """Empty every table the migrations made (all but Alembic's own)."""
    for uri in uris.values():
        engine = create_engine(uri)
        with engine.begin() as connection:
            tables = [name for name in inspect(connection).get_table_names() if name != "alembic_version"]
            connection.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY"))
        engine.dispose()


def make_db_uris(backend: str, directory, request) -> dict[str, str]:
    if backend == "sqlite":
        uris = _uris({s: f"sqlite:///{directory}/{s}.db" for s in PG_DATABASES})
        upgrade({"DB_URIS": uris})
        return uris
    uris = request.getfixturevalue("postgres_uris")
    truncate(uris)
    return uris


@pytest.fixture(params=BACKENDS)
def db_uris(request, tmp_path) -> dict[str, str]:
    return make_db_uris(request.param, tmp_path, request)


def service_config(amqp_uri: str, db_uris: dict[str, str], **overrides) -> dict:
    config = {
        "AMQP_URI": amqp_uri,
        "DB_URIS": db_uris,
        "HEARTBEAT": 30,
        "max_workers": 10,
        "SERVICE_CONTAINER_CLS": "services.infra.container.Container",
        "RPC_TIMEOUT": 5,
        "READY_TIMEOUT": 1,
        "MAX_BODY_BYTES": 4096,
        "REQUEST_ID_SECRET": "test-secret",
        "API_KEY_SECRET": API_KEY_SECRET,
        "CERTIFICATE_SIGNING_KEY": signing_key_path(),
        "WEB_SERVER_ADDRESS": "127.0.0.1:0",
        "SMTP_HOST": None,
        "EVENT_RETRY_ATTEMPTS": 3,
        "EVENT_RETRY_BASE_DELAY": 0.05,
        # no /metrics endpoints: many containers run in one test process (a test that reads one sets a port)
        **{f"METRICS_PORT_{service.upper()}": 0 for service in SERVICES},
    }
    config.update(overrides)
    return config


@pytest.fixture
def config(rabbit_config, db_uris, tmp_path) -> dict:
    return service_config(rabbit_config["AMQP_URI"], db_uris, MAIL_DIR=str(tmp_path / "mail"))


@pytest.fixture
def unique() -> str:
    """A random token for isolating test data (e-mails, courses, keys)."""
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="session")
def span_exporter():
    """The test session's tracer provider, keeping finished spans in memory (the SDK's own
    exporter); a tracer provider can be installed once per process, so it is shared."""
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return exporter


@pytest.fixture
def spans(span_exporter):
    """Traces on for one test: ``spans.get_finished_spans()`` is what it made."""
    from services.infra import tracing

    span_exporter.clear()
    tracing.enable(True)
    yield span_exporter
    tracing.enable(False)
    span_exporter.clear()
