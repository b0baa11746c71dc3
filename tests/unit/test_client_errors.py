"""The pika client's error table keeps step with ``services.exceptions``.

``clients/`` must not import the services (they pull in nameko and eventlet), so
it keeps classes of its own; this test is what keeps the two lists equal. The
service errors are found by introspection: a new one without a client class
under the same ``exc_path`` fails here.
"""

from __future__ import annotations

import ast
import inspect
import json
from pathlib import Path

import pytest
from nameko.exceptions import serialize

from clients import errors as client_errors
from services import exceptions

DETAILS = {"student_id": 42, "ratio": 0.5, "ok": True, "missing": None, "fields": {"email": ["Not valid."]}}


def _service_errors() -> list[type[exceptions.ServiceError]]:
    """Every error class ``services.exceptions`` defines, bases included (they travel too)."""
    return sorted(
        (
            cls
            for _, cls in inspect.getmembers(exceptions, inspect.isclass)
            if issubclass(cls, exceptions.ServiceError) and cls.__module__ == exceptions.__name__
        ),
        key=lambda cls: cls.__name__,
    )


SERVICE_ERRORS = _service_errors()


def over_the_wire(exc: Exception) -> dict:
    """The ``error`` of a nameko reply, as the client reads it off the broker."""
    return json.loads(json.dumps(serialize(exc)))


def client_class(cls: type) -> type:
    return client_errors.REMOTE_ERRORS.get(over_the_wire(cls("probe"))["exc_path"])


def test_the_introspection_finds_the_service_errors():
    names = {cls.__name__ for cls in SERVICE_ERRORS}
    assert {"ServiceError", "NotFound", "Conflict", "StudentNotFound", "JobNotFound"} <= names


@pytest.mark.parametrize("cls", SERVICE_ERRORS, ids=lambda cls: cls.__name__)
def test_every_service_error_has_a_client_class_of_the_same_name_and_code(cls):
    mapped = client_class(cls)

    assert mapped is not None, f"clients/errors.py has no class for {cls.__module__}.{cls.__name__}"
    assert mapped.__name__ == cls.__name__
    assert mapped.code == cls.code
    assert getattr(client_errors, cls.__name__) is mapped
    assert issubclass(mapped, client_errors.ServiceError)


@pytest.mark.parametrize("cls", SERVICE_ERRORS, ids=lambda cls: cls.__name__)
def test_client_classes_mirror_the_service_hierarchy(cls):
    mapped = client_class(cls)
    assert mapped is not None, f"clients/errors.py has no class for {cls.__name__}"

    # e.g. StudentNotFound -> NotFound -> ServiceError on both sides, so `except NotFound` means the same
    service_chain = [base.__name__ for base in cls.__mro__ if base in SERVICE_ERRORS]
    client_chain = [base.__name__ for base in mapped.__mro__ if issubclass(base, client_errors.ServiceError)]
    assert client_chain == service_chain


@pytest.mark.parametrize("cls", SERVICE_ERRORS, ids=lambda cls: cls.__name__)
def test_a_serialised_service_error_decodes_to_its_client_class(cls):
    payload = over_the_wire(cls("Something went wrong.", DETAILS))

    error = client_errors.remote_error(payload)

    assert type(error) is client_class(cls)
    assert (error.code, error.message, str(error)) == (cls.code, "Something went wrong.", "Something went wrong.")
    assert error.details == DETAILS
    assert (error.exc_type, error.exc_path) == (cls.__name__, f"services.exceptions.{cls.__name__}")
    assert error.to_dict() == {"error": cls.code, "message": "Something went wrong.", "details": DETAILS}


@pytest.mark.parametrize(
    "cls",
    [cls for cls in SERVICE_ERRORS if issubclass(cls, exceptions.NotFound)],
    ids=lambda cls: cls.__name__,
)
def test_except_not_found_catches_every_not_found(cls):
    with pytest.raises(client_errors.NotFound):
        raise client_errors.remote_error(over_the_wire(cls("gone")))


def test_an_unknown_path_stays_a_plain_remote_error():
    error = client_errors.remote_error({"exc_type": "KeyError", "exc_path": "builtins.KeyError", "value": "'x'"})

    assert type(error) is client_errors.RemoteError
    assert error.message == "KeyError: 'x'"


def test_the_client_errors_import_neither_services_nor_nameko():
    tree = ast.parse(Path(client_errors.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}

    assert not {name for name in imported if name.split(".")[0] in ("services", "nameko", "eventlet")}
