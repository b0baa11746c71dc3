"""The gateway's door: who is asking (API key), may they (scope), not too fast
(rate limit), and what they did (audit).

One :class:`AccessGate` per gateway process, shared by every HTTP entrypoint and
the ``/keys`` and ``/audit`` routes. Checking a key costs no database round trip:
the gate keeps every usable key (id, keyed hash, scopes, expiry, limits) in memory
and reloads them every ``API_KEY_REFRESH_SECONDS`` (default 1 s), so a key revoked
anywhere (another gateway, ``python -m tools.keys``, the shell) stops working on
every gateway within that period. An id it does not know (a key created a moment
ago) is looked up by its primary key, at most ``MISS_LOOKUPS_PER_SECOND`` times a
second and once per id per second, so guessing ids cannot turn into a database load.

Audit entries are written in batches (group commit): a request that changed
something is answered once its entry is committed (or after ``AUDIT_WAIT``
seconds if the database is away; the entry stays queued and is retried). The
insert runs in a thread of eventlet's pool, on an engine of its own that only the
writer uses: database drivers block, and a write on the hub would stop every
request meanwhile, so that no entry could join the batch being written.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import eventlet
from eventlet import tpool
from eventlet.event import Event
from nameko.extensions import DependencyProvider, SharedExtension
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker
from sqlalchemy.pool import StaticPool

from gateway.access import keys, store
from gateway.access.limits import RateLimiter, Verdict
from gateway.access.models import AuditEntry, GatewayBase
from gateway.exceptions import InsufficientScope, InvalidApiKey, RateLimited, Unauthenticated
from services.infra.db import SQLITE_BUSY_TIMEOUT_MS, build_engine, db_uri
from services.infra.models import utcnow
from services.infra.settings import Settings

log = logging.getLogger(__name__)

MISS_LOOKUPS_PER_SECOND = 20
MISS_MEMORY_SECONDS = 1.0  # an id not found is not looked up again for this long
AUDIT_BATCH = 1000
AUDIT_WAIT = 2.0  # seconds a response waits for its audit entry's commit
AUDIT_MAX_QUEUED = 100_000  # entries kept for retry while the database is away
PURGE_EVERY = 3600.0


class Principal(NamedTuple):
    """Who a request comes from: its key's id and name (the actor), and its scopes."""

    key_id: str
    name: str
    scopes: frozenset[str]


class CachedKey(NamedTuple):
    principal: Principal
    digest: str
    expires_at: float | None  # epoch seconds
    rate: float
    burst: int


class AccessGate(SharedExtension):
    def bind(self, container: Any) -> AccessGate:
        # checked while the container is built (before any greenthread runs), so that a gateway
        # started without its secrets stops with one line naming the variable
        settings = Settings.from_config(container.config)
        settings.require("request_id_secret")  # the routes sign status request ids with it
        settings.require("api_key_secret")
        return super().bind(container)

    def setup(self) -> None:
        config = self.container.config
        self.settings = Settings.from_config(config)
        self.secret_key = self.settings.require("api_key_secret")
        uri = db_uri(config, "gateway", GatewayBase)
        synchronous = self.settings.sqlite_synchronous
        self.Session = sessionmaker(bind=build_engine(uri, sqlite_synchronous=synchronous), expire_on_commit=False)
        self.audit_engine = build_engine(uri, sqlite_synchronous=synchronous, **_writer_options(uri))
        self.audit_insert = AuditEntry.__table__.insert()
        self.keys: dict[str, CachedKey] = {}
        self.limiter = RateLimiter()
        self.lookups = RateLimiter()  # of ids not in the cache, all together
        self.misses: dict[str, float] = {}
        self.used: dict[str, datetime] = {}
        self.queued: list[tuple[dict, Event | None]] = []
        self.flushing = False
        self.running = False

    def start(self) -> None:
        self.reload()  # a gateway that cannot read its keys does not start
        self.running = True
        self.refresher = self.container.spawn_managed_thread(self._refresh_loop)

    def stop(self) -> None:
        self.running = False
        self.refresher.kill()
        with eventlet.Timeout(AUDIT_WAIT * 2, False):
            while self.flushing:
                eventlet.sleep(0.01)
        try:  # whatever is left: the requests it records were answered
            while self.queued:
                self._write_audit()
            self._write_last_used()
        except Exception:
            log.exception("%d audit entries could not be written while stopping", len(self.queued))

    def kill(self) -> None:
        self.running = False
        self.refresher.kill()

    # --- keys -----------------------------------------------------------------

    def reload(self) -> None:
        self.keys = {row.id: self._cached(row) for row in store.load_keys(self.Session)}
        self.misses.clear()

    def _cached(self, row: Any) -> CachedKey:
        return CachedKey(
            principal=Principal(row.id, row.name, frozenset(row.scopes)),
            digest=row.digest,
            expires_at=None if row.expires_at is None else row.expires_at.timestamp(),
            rate=row.rate_per_second or self.settings.rate_limit_per_second,
            burst=row.burst or self.settings.rate_limit_burst,
        )

    def admit(self, authorization: str | None, scope: str) -> tuple[Principal, Verdict]:
        """The request's principal and its rate-limit verdict, or the error that refuses it."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("Send an API key: Authorization: Bearer msk_...", {})
        parsed = keys.parse(token)
        if parsed is None:
            raise Unauthenticated("The Authorization header does not hold a well-formed API key.", {})
        cached = self._lookup(parsed.key_id)
        if (
            cached is None
            or not keys.matches(self.secret_key, parsed, cached.digest)
            or (cached.expires_at is not None and cached.expires_at <= time.time())
        ):
            raise InvalidApiKey("The API key is not valid (unknown, revoked or expired).", {})
        return self._admitted(cached, scope)

    def admit_key(self, key_id: str, scope: str) -> tuple[Principal, Verdict]:
        """As :meth:`admit`, for a key already proven (a console session, signed with the key's id):
        the key must still be usable now, and is rate-limited and scope-checked the same way."""
        cached = self._lookup(key_id)
        if cached is None or (cached.expires_at is not None and cached.expires_at <= time.time()):
            raise InvalidApiKey("The API key of this session is no longer valid (revoked or expired).", {})
        return self._admitted(cached, scope)

    def _admitted(self, cached: CachedKey, scope: str) -> tuple[Principal, Verdict]:
        principal = cached.principal
        self.used[principal.key_id] = utcnow()
        verdict = self.limiter.take(principal.key_id, cached.rate, cached.burst)
        if not verdict.allowed:
            raise RateLimited(
                f"Rate limit of this key reached; retry after {verdict.retry_after} s.",
                {"retry_after": verdict.retry_after},
                principal=principal,
                verdict=verdict,
            )
        if not keys.allows(principal.scopes, scope):
            raise InsufficientScope(
                f"This key lacks the scope {scope}.",
                {"required_scope": scope},
                principal=principal,
                verdict=verdict,
            )
        return principal, verdict

    def _lookup(self, key_id: str) -> CachedKey | None:
        cached = self.keys.get(key_id)
        if cached is not None:
            return cached
        now = time.monotonic()
        if now - self.misses.get(key_id, -MISS_MEMORY_SECONDS) < MISS_MEMORY_SECONDS:
            return None
        if not self.lookups.take("", MISS_LOOKUPS_PER_SECOND, MISS_LOOKUPS_PER_SECOND).allowed:
            return None
        try:
            row = store.load_key(self.Session, key_id)
        except Exception:  # the database is away: the keys known stay valid
            log.exception("looking up an API key failed")
            return None
        if row is None:
            if len(self.misses) > 10_000:
                self.misses.clear()
            self.misses[key_id] = now
            return None
        self.keys[key_id] = cached = self._cached(row)
        return cached

    def _refresh_loop(self) -> None:
        purged_at = 0.0
        while self.running:
            eventlet.sleep(self.settings.api_key_refresh_seconds)
            try:
                self.reload()
                self._write_last_used()
                if self.settings.audit_retention_days and time.time() - purged_at >= PURGE_EVERY:
                    cutoff = utcnow() - timedelta(days=self.settings.audit_retention_days)
                    store.purge_audit(self.Session, cutoff)
                    purged_at = time.time()
            except Exception:
                log.exception("refreshing API keys failed; the keys known stay in use")

    def _write_last_used(self) -> None:
        used, self.used = self.used, {}
        try:
            store.touch_keys(self.Session, used)
        except Exception:
            for key_id, at in used.items():  # next time, then
                self.used.setdefault(key_id, at)
            raise

    # --- audit ----------------------------------------------------------------

    def record(self, entry: dict) -> None:
        """Queue ``entry`` and wait (at most ``AUDIT_WAIT`` s) until it is committed."""
        done = Event()
        self.queued.append((entry, done))
        if not self.flushing:
            self.flushing = True
            eventlet.spawn_n(self._flush)
        done.wait(AUDIT_WAIT)

    def _flush(self) -> None:
        backoff = 0.1
        try:
            while self.queued:
                try:
                    self._write_audit()
                    backoff = 0.1
                except Exception:
                    log.exception("writing %d audit entries failed; retrying in %.1fs", len(self.queued), backoff)
                    eventlet.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    if not self.running:
                        return
        finally:
            self.flushing = False

    def _write_audit(self) -> None:
        batch, self.queued = self.queued[:AUDIT_BATCH], self.queued[AUDIT_BATCH:]
        if not batch:
            return
        try:
            tpool.execute(self._insert, [entry for entry, _ in batch])
        except Exception:
            for _, done in batch:  # their requests are answered; the entries wait for the database
                if done is not None and not done.ready():
                    done.send(None)
            kept = [(entry, None) for entry, _ in batch]
            self.queued = (kept + self.queued)[:AUDIT_MAX_QUEUED]
            raise
        for _, done in batch:
            if done is not None and not done.ready():
                done.send(None)

    def _insert(self, entries: list[dict]) -> None:
        """In a pool thread: one transaction for the batch."""
        with self.audit_engine.begin() as connection:
            connection.execute(self.audit_insert, entries)


def _writer_options(uri: str) -> dict:
    """The audit writer's engine: one connection (no pool, so no lock shared with green
    threads), used by one pool thread at a time, and no ping: a failed batch is retried."""
    options: dict = {"poolclass": StaticPool, "pool_pre_ping": False}
    if make_url(uri).get_backend_name() == "sqlite":
        options["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False}
    return options


def audit_entry(
    principal: Principal | None,
    on_behalf_of: str | None,
    method: str,
    route: str,
    targets: dict,
    status: int,
    correlation_id: str | None,
) -> dict:
    return {
        "at": datetime.now(UTC),
        "key_id": principal.key_id if principal else None,
        "key_name": principal.name if principal else None,
        "on_behalf_of": on_behalf_of,
        "method": method,
        "route": route,
        "targets": targets,
        "status": status,
        "correlation_id": correlation_id,
    }


class Access(DependencyProvider):
    """The gate, for routes that manage keys and read the audit trail::

    class GatewayService:
        access = Access()    # self.access.Session, self.access.secret_key, self.access.reload()
    """

    gate = AccessGate()

    def get_dependency(self, worker_ctx: Any) -> AccessGate:
        return self.gate
