"""Every setting mensageria reads from ``config.yaml``, declared once: its type and default.

``config.yaml`` maps environment variables onto these keys (``RPC_TIMEOUT: ${RPC_TIMEOUT:5}``);
a unit test keeps its defaults equal to the ones here. Code never calls ``config.get`` for
these keys: a service declares ``settings = SettingsProvider()`` and reads
``self.settings.rpc_timeout``; another extension calls ``Settings.from_config(container.config)``::

    class CertificatesService:
        settings = SettingsProvider()

        @rpc
        def link(self, code):
            return f"{self.settings.public_base_url}/certificates/{code}"

A value of the wrong type stops the process at start with the key's name, not at first use.
nameko's own keys (``AMQP_URI``, ``HEARTBEAT``, ``max_workers``, ``DB_URIS``, ``LOGGING``) are
read by nameko and are not repeated here.
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

with warnings.catch_warnings():  # tools read settings too: keep eventlet's notice off their output
    warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
    from nameko.extensions import DependencyProvider


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the key."""


def one_line_config_errors() -> None:
    """Make a configuration error that stops ``nameko run`` one line naming its key, not a traceback."""
    default_hook = sys.excepthook

    def hook(kind, error, trace):
        if issubclass(kind, ConfigError):
            print(f"mensageria: {error}", file=sys.stderr)
            return
        default_hook(kind, error, trace)

    sys.excepthook = hook


class MissingSecret(ConfigError):
    """A secret without a default that this process needs."""


def _setting(
    default: Any, minimum: float | None = None, choices: tuple[str, ...] | None = None, maximum: float | None = None
) -> Any:
    return field(default=default, metadata={"minimum": minimum, "maximum": maximum, "choices": choices})


@dataclass(frozen=True)
class Settings:
    """Typed settings; each field's config key is its name in upper case."""

    # RPC: every service-to-service and gateway call gives up after this (seconds)
    rpc_timeout: float = _setting(5.0, minimum=0.001)
    # seconds between probes of a service's RPC reply path (services/infra/rpc.py); 0: no probes
    reply_probe_seconds: float = _setting(10.0, minimum=0)
    # gateway
    web_server_address: str = "0.0.0.0:8000"
    # gateway processes the launcher runs on that address (SO_REUSEPORT: the kernel spreads the
    # connections), and the directory where they tell each other of their writes (set by the
    # launcher for its processes; gateway/siblings.py)
    gateway_processes: int = _setting(1, minimum=1)
    # requests one gateway process handles at once (tools.launch gives it as MAX_WORKERS to the
    # gateway's processes; 0: MAX_WORKERS). A request mostly waits for RPC answers and publisher
    # confirms, so a gateway holds more at once than a service's workers do
    gateway_max_workers: int = _setting(64, minimum=0)
    gateway_siblings_dir: str | None = None
    # eventlet's access log line per request (client address, path, status, bytes, seconds), beside the
    # worker line every request logs (route, status, milliseconds, correlation id, client address)
    gateway_access_log: bool = False
    ready_timeout: float = _setting(2.0, minimum=0.001)
    max_body_bytes: int = _setting(65536, minimum=1)
    # secrets without a default: `make run` generates them into the data directory;
    # the gateway (and tools.keys) refuse to start without them
    request_id_secret: str | None = None
    api_key_secret: str | None = None
    # access: how often each gateway reloads the API keys (a revoked key stops working within this),
    # the default rate limit per key (requests/s, burst), and how long audit entries are kept (0: forever)
    api_key_refresh_seconds: float = _setting(1.0, minimum=0.05)
    rate_limit_per_second: float = _setting(50.0, minimum=0.001)
    rate_limit_burst: int = _setting(100, minimum=1)
    audit_retention_days: float = _setting(365.0, minimum=0)
    # the operations console: how long a sign-in lasts (the key's revocation ends it sooner)
    console_session_seconds: float = _setting(28_800.0, minimum=60)
    # the RabbitMQ management API (http://USER:PASSWORD@HOST:15672), for the console's queue depths
    # and consumers; a user with the ``monitoring`` tag is enough. None: the console shows none
    rabbit_api_uri: str | None = None
    student_cache_seconds: float = _setting(30.0, minimum=0)
    # how many students each gateway process keeps for GET /students/{id} (0: none, every read asks)
    student_read_cache_size: int = _setting(10_000, minimum=0)
    # pending requests the status service's applier takes into one transaction (and one message of
    # events, split when it would pass 1 MiB): more is faster through a backlog or a bulk job, a
    # longer write each time on the status database
    status_batch_size: int = _setting(2000, minimum=1)
    bulk_max_rows: int = _setting(100_000, minimum=1)
    bulk_max_bytes: int = _setting(32 * 1024 * 1024, minimum=1)
    job_errors_shown: int = _setting(100, minimum=0)
    # where people reach the gateway: links in certificates and mails
    public_base_url: str = "http://localhost:8000"
    # certificates' signed credentials (Open Badges 3.0): the PEM private key that signs them (a
    # secret without a default: `make run` generates one), and the issuer they name (its id
    # defaults to PUBLIC_BASE_URL/issuer, its url to PUBLIC_BASE_URL)
    certificate_signing_key: str | None = None
    certificate_issuer_id: str | None = None
    certificate_issuer_name: str = "mensageria"
    certificate_issuer_url: str | None = None
    # the language of certificates and mails for a student without one of their own
    # (the choices are services.i18n.LANGUAGES)
    default_language: str = _setting("en", choices=("en", "pt_BR"))
    # mail: with no smtp_host, mails are written as .eml files to mail_dir
    smtp_host: str | None = None
    smtp_port: int = _setting(587, minimum=1)
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_timeout: float = _setting(10.0, minimum=0.001)
    # SMTP connections the notifications service sends over at once (a recipient's mails keep to one)
    smtp_connections: int = _setting(4, minimum=1)
    mail_from: str = "mensageria <no-reply@mensageria.local>"
    mail_dir: str = "./mail"
    mail_max_attempts: int = _setting(10, minimum=1)
    mail_retry_base_delay: float = _setting(30.0, minimum=0)
    # AMQP messages larger than this are refused before they are decoded (bytes)
    max_message_bytes: int = _setting(4 * 1024 * 1024, minimum=1024)
    # how much of a refused message's raw body its dead letter keeps (bytes)
    dead_letter_body_bytes: int = _setting(65536, minimum=0)
    # event handlers: attempts before an event is parked, and the first retry's delay (seconds)
    event_retry_attempts: int = _setting(5, minimum=1)
    event_retry_base_delay: float = _setting(1.0, minimum=0)
    # durable queues: quorum (replicated, the default) or classic (today's single-node queues); a
    # message delivered this many times more without an ack (its consumer crashed, or requeued it) is
    # dead-lettered to its service's dead letters (quorum only; see services/infra/queues.py)
    queue_type: str = _setting("quorum", choices=("quorum", "classic"))
    queue_delivery_limit: int = _setting(20, minimum=1)
    # Prometheus /metrics: each process's own port (0: no endpoint)
    metrics_port_gateway: int = _setting(9180, minimum=0)
    metrics_port_students: int = _setting(9181, minimum=0)
    metrics_port_status: int = _setting(9182, minimum=0)
    metrics_port_certificates: int = _setting(9183, minimum=0)
    metrics_port_notifications: int = _setting(9184, minimum=0)
    # autoscaling (tools/autoscale.py): instances per service as MIN..MAX (1..1: fixed, as before);
    # the backlog one instance is meant to hold (0: its max_workers); how long every recommendation
    # must be lower before an instance is stopped, and seconds between looks at the backlog
    scale_students: str = "1..1"
    scale_status: str = "1..1"
    scale_certificates: str = "1..1"
    scale_notifications: str = "1..1"
    scale_target: int = _setting(0, minimum=0)
    scale_keep_alive: float = _setting(30.0, minimum=0)
    scale_interval: float = _setting(1.0, minimum=0.1)
    # CPU priority (tools.launch): added to the niceness each service's processes start with, so
    # that on shared cores the work that waits for nobody (certificates, mails) yields to status
    # changes; 0 to 19, as nice(1) takes without privileges
    nice_students: int = _setting(0, minimum=0, maximum=19)
    nice_status: int = _setting(0, minimum=0, maximum=19)
    nice_certificates: int = _setting(10, minimum=0, maximum=19)
    nice_notifications: int = _setting(10, minimum=0, maximum=19)
    nice_gateway: int = _setting(0, minimum=0, maximum=19)
    # a scaling launcher's own /metrics (instances, backlog, scale events) per service (0: none)
    metrics_port_launch_students: int = _setting(9191, minimum=0)
    metrics_port_launch_status: int = _setting(9192, minimum=0)
    metrics_port_launch_certificates: int = _setting(9193, minimum=0)
    metrics_port_launch_notifications: int = _setting(9194, minimum=0)
    # where the gateway reads those launchers' /metrics for the console's Instances panel
    launcher_metrics_host: str = "127.0.0.1"
    # SQLite: full (a commit is on disk when it returns) or normal (WAL synced at checkpoints only:
    # the last commits can be undone by a power loss or an OS crash; services/infra/db.py)
    sqlite_synchronous: str = _setting("full", choices=("full", "normal"))
    # logs: plain text lines, or one JSON object per line (read by config.yaml's LOGGING block)
    log_format: str = _setting("plain", choices=("plain", "json"))

    def require(self, name: str) -> str:
        """The value of a setting that has no default; ConfigError naming its variable if unset."""
        value = getattr(self, name)
        if value is None or not str(value).strip():
            raise MissingSecret(
                f"config: {name.upper()} is not set; set the environment variable {name.upper()} "
                "(`make run` generates one into the data directory)"
            )
        return value

    @classmethod
    def config_keys(cls) -> list[str]:
        return [f.name.upper() for f in dataclasses.fields(cls)]

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Settings:
        """The settings in ``config`` (a missing or empty value takes the default)."""
        values = {}
        for spec in dataclasses.fields(cls):
            raw = config.get(spec.name.upper())
            if raw is None or (isinstance(raw, str) and not raw.strip() and spec.type != "str | None"):
                continue
            values[spec.name] = _convert(spec, raw)
        return cls(**values)


def _convert(spec: dataclasses.Field, raw: Any) -> Any:
    key = spec.name.upper()
    kind = spec.type
    try:
        if kind == "bool":
            value = _flag(raw)
        elif kind == "int":
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError(raw)
            value = int(raw)
        elif kind == "float":
            if isinstance(raw, bool):
                raise ValueError(raw)
            value = float(raw)
        else:  # str, str | None
            value = (str(raw) if str(raw).strip() else None) if kind == "str | None" else str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"config: {key} must be {_KINDS[kind]}, got {raw!r}") from None
    minimum = spec.metadata.get("minimum")
    if minimum is not None and value < minimum:
        raise ConfigError(f"config: {key} must be at least {minimum:g}, got {raw!r}")
    maximum = spec.metadata.get("maximum")
    if maximum is not None and value > maximum:
        raise ConfigError(f"config: {key} must be at most {maximum:g}, got {raw!r}")
    choices = spec.metadata.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"config: {key} must be {' or '.join(choices)}, got {raw!r}")
    return value


_KINDS = {"bool": "true or false", "int": "a whole number", "float": "a number"}


def _flag(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


class SettingsProvider(DependencyProvider):
    """The service's :class:`Settings`, parsed once when the container starts."""

    def setup(self) -> None:
        self.settings = Settings.from_config(self.container.config)

    def get_dependency(self, worker_ctx: Any) -> Settings:
        return self.settings
