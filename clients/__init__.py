"""mensageria without Nameko: a pika client for RPC calls and events.

The only code in the project that imports pika; it imports neither nameko nor
eventlet, so it runs in any Python program (Flask, Django, scripts, workers)::

    from clients import RpcClient, EventPublisher, EventSubscriber, StudentNotFound

See :mod:`clients.rpc`, :mod:`clients.events` and :mod:`clients.errors`.
"""

from clients.errors import (
    BackendTimeout,
    BadRequest,
    BrokerError,
    BrokerUnavailable,
    CertificateNotFound,
    ClientError,
    Conflict,
    EmailAlreadyExists,
    IdempotencyKeyReused,
    IncorrectSignature,
    JobNotFound,
    JobUploadSuperseded,
    MalformedRequest,
    MethodNotFound,
    NotFound,
    NotificationNotFound,
    RemoteError,
    RpcTimeout,
    ServiceError,
    ServiceUnavailable,
    StatusListNotFound,
    StatusRequestNotFound,
    StudentNotFound,
    UnknownService,
    UnroutableEvent,
    ValidationFailed,
    VersionMismatch,
)
from clients.events import EventPublisher, EventSubscriber
from clients.rpc import RpcClient

__all__ = [
    "BackendTimeout",
    "BadRequest",
    "BrokerError",
    "BrokerUnavailable",
    "CertificateNotFound",
    "ClientError",
    "Conflict",
    "EmailAlreadyExists",
    "EventPublisher",
    "EventSubscriber",
    "IdempotencyKeyReused",
    "IncorrectSignature",
    "JobNotFound",
    "JobUploadSuperseded",
    "MalformedRequest",
    "MethodNotFound",
    "NotFound",
    "NotificationNotFound",
    "RemoteError",
    "RpcClient",
    "RpcTimeout",
    "ServiceError",
    "ServiceUnavailable",
    "StatusListNotFound",
    "StatusRequestNotFound",
    "StudentNotFound",
    "UnknownService",
    "UnroutableEvent",
    "ValidationFailed",
    "VersionMismatch",
]
