"""Keys and audit entries in the gateway's database: the only module that queries them.

Every function takes a session factory (``sessionmaker``); the command-line tool, the
shell helpers, the ``/keys`` and ``/audit`` routes and the gateway's key cache share them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from marshmallow import ValidationError
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import sessionmaker

from gateway.access import keys
from gateway.access.models import ApiKey, AuditEntry
from services.fields import Line
from services.infra.models import utcnow
from services.infra.pagination import decode_cursor, encode_cursor

KEY_FIELDS = (
    "id",
    "name",
    "scopes",
    "created_at",
    "created_by",
    "expires_at",
    "last_used_at",
    "revoked",
    "revoked_at",
    "rate_per_second",
    "burst",
)


_NAME = Line(keys.MAX_NAME)


class KeyNotFound(LookupError):
    pass


def key_record(row: ApiKey) -> dict:
    """A key as shown to people: everything but its digest."""
    record = {field: getattr(row, field) for field in KEY_FIELDS}
    record["scopes"] = list(row.scopes)
    return record


def create_key(
    Session: sessionmaker,
    secret_key: str,
    name: str,
    scopes: Iterable[str],
    expires_in_days: float | None = None,
    rate_per_second: float | None = None,
    burst: int | None = None,
    created_by: str | None = None,
) -> tuple[dict, str]:
    """A new key: ``(its record, the key itself)``. The key is not kept: show it once."""
    try:  # the rule a name follows over HTTP too
        name = _NAME.deserialize(name)
    except ValidationError as exc:
        raise ValueError(f"a key's name: {' '.join(exc.messages)}") from None
    granted = keys.check_scopes(scopes)
    if expires_in_days is not None and not 0 < expires_in_days <= 36500:
        raise ValueError("expires in must be more than 0 and at most 36500 days")
    if rate_per_second is not None and not 0 < rate_per_second <= 1_000_000:
        raise ValueError("a rate is more than 0 and at most 1000000 requests/s")
    if burst is not None and not 1 <= burst <= 1_000_000:
        raise ValueError("a burst is 1 to 1000000 requests")
    key_id, secret, key = keys.new_key()
    now = utcnow()
    row = ApiKey(
        id=key_id,
        name=name,
        digest=keys.digest(secret_key, key_id, secret),
        scopes=granted,
        created_at=now,
        created_by=created_by,
        expires_at=None if expires_in_days is None else now + timedelta(days=expires_in_days),
        revoked=False,
        rate_per_second=rate_per_second,
        burst=burst,
    )
    with Session.begin() as session:
        session.add(row)
        session.flush()
        record = key_record(row)
    return record, key


def list_keys(Session: sessionmaker) -> list[dict]:
    with Session() as session:
        return [key_record(row) for row in session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))]


def get_key(Session: sessionmaker, key_id: str) -> dict:
    with Session() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise KeyNotFound(key_id)
        return key_record(row)


def revoke_key(Session: sessionmaker, key_id: str) -> dict:
    """Revoked at once in the database; every gateway refuses it within its refresh period.
    Revoking a revoked key changes nothing."""
    with Session.begin() as session:
        row = session.get(ApiKey, key_id)
        if row is None:
            raise KeyNotFound(key_id)
        if not row.revoked:
            row.revoked, row.revoked_at = True, utcnow()
        return key_record(row)


def count_keys(Session: sessionmaker) -> int:
    with Session() as session:
        return session.scalar(select(func.count()).select_from(ApiKey))


def load_keys(Session: sessionmaker) -> list[ApiKey]:
    """Every key that may still be used (not revoked), for the gateway's cache."""
    with Session() as session:
        return list(session.scalars(select(ApiKey).where(ApiKey.revoked.is_(False))))


def load_key(Session: sessionmaker, key_id: str) -> ApiKey | None:
    """One usable key (not revoked), or None."""
    with Session() as session:
        return session.scalars(select(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked.is_(False))).first()


def touch_keys(Session: sessionmaker, used: dict[str, datetime]) -> None:
    """Record when each key was last used (only ever moving it forward)."""
    if not used:
        return
    with Session.begin() as session:
        for key_id, at in used.items():
            session.execute(
                update(ApiKey)
                .where(ApiKey.id == key_id, (ApiKey.last_used_at.is_(None)) | (ApiKey.last_used_at < at))
                .values(last_used_at=at)
            )


# --- audit ---------------------------------------------------------------------

AUDIT_FIELDS = (
    "id",
    "at",
    "key_id",
    "key_name",
    "on_behalf_of",
    "method",
    "route",
    "targets",
    "status",
    "correlation_id",
)


def list_audit(
    Session: sessionmaker,
    key_id: str | None = None,
    since: datetime | None = None,
    limit: int = 50,
    cursor: str | None = None,
) -> dict:
    """Audit entries, newest first, by keyset pages: ``{"items", "next_cursor"}``."""
    query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit + 1)
    before = decode_cursor(cursor)
    if before is not None:
        query = query.where(AuditEntry.id < before)
    if key_id is not None:
        query = query.where(AuditEntry.key_id == key_id)
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    with Session() as session:
        rows = list(session.scalars(query))
    items = rows[:limit]
    next_cursor = encode_cursor(items[-1].id) if len(rows) > limit else None
    return {"items": [{f: getattr(row, f) for f in AUDIT_FIELDS} for row in items], "next_cursor": next_cursor}


def purge_audit(Session: sessionmaker, older_than: datetime) -> int:
    with Session.begin() as session:
        return session.execute(delete(AuditEntry).where(AuditEntry.at < older_than)).rowcount
