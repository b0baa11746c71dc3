"""Database operations of the certificates service (its own tables only)."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from services import credentials
from services._certificates.models import Certificate, PublishedKey, StatusList
from services.exceptions import CertificateNotFound, StatusListNotFound
from services.infra.models import utcnow

# 24 random bytes: 192 bits, URL-safe base64 without padding (32 characters)
CODE_BYTES = 24
CODE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32}$")


def new_code() -> str:
    return secrets.token_urlsafe(CODE_BYTES)


def get(session: Session, code: str) -> Certificate:
    certificate = None
    if isinstance(code, str) and CODE_PATTERN.match(code):
        certificate = session.scalar(select(Certificate).where(Certificate.code == code))
    if certificate is None:
        raise CertificateNotFound("No certificate has this code.", {"code": str(code)[:64]})
    return certificate


def issue(
    session: Session,
    student: dict,
    course: str,
    request_id: str | None,
    correlation_id: str | None = None,
    language: str | None = None,
) -> tuple[Certificate, bool]:
    """The student's certificate for ``course``: the existing one, or a new one (recording the
    request and the correlation id that caused it)."""
    existing = session.scalar(
        select(Certificate).where(Certificate.student_id == student["id"], Certificate.course == course)
    )
    if existing is not None:
        return existing, False
    certificate = Certificate(
        code=new_code(),
        student_id=student["id"],
        course=course,
        student_name=student["name"],
        student_email=student["email"],
        request_id=request_id,
        correlation_id=correlation_id,
        issued_at=utcnow(),
        language=language,
    )
    session.add(certificate)
    session.flush()  # a concurrent twin fails here on (student_id, course): the handler retries
    return certificate, True


def for_student(session: Session, student_id: int) -> list[Certificate]:
    query = select(Certificate).where(Certificate.student_id == student_id).order_by(Certificate.id)
    return list(session.scalars(query))


def revoke(session: Session, code: str, reason: str) -> tuple[Certificate, bool]:
    certificate = get(session, code)
    if certificate.revoked_at is not None:
        return certificate, False
    certificate.revoked_at, certificate.revoke_reason = utcnow(), reason
    return certificate, True


def allocate_bit(session: Session, new_list: Callable[[int], str]) -> tuple[int, int]:
    """A status-list bit no credential has had: the next of the newest list, or the first of a
    new list (``new_list(number)`` signs its empty publication). Bits are never handed out twice:
    the counter only grows, in the same transaction as the credential that takes the bit."""
    while True:
        newest = session.scalar(select(func.max(StatusList.id)))
        if newest is not None:
            taken = session.execute(
                update(StatusList)
                .where(StatusList.id == newest, StatusList.next_index < StatusList.size)
                .values(next_index=StatusList.next_index + 1)
                .returning(StatusList.next_index)
                .execution_options(synchronize_session=False)
            ).first()
            if taken is not None:
                return newest, taken[0] - 1
        number = (newest or 0) + 1  # the newest is full (or there is none): open the next
        _insert_if_absent(
            session,
            StatusList,
            id=number,
            size=credentials.STATUS_LIST_SIZE,
            next_index=0,
            credential=new_list(number),
            published_at=utcnow(),
        )


def _insert_if_absent(session: Session, model: type, **values) -> None:
    """INSERT … ON CONFLICT DO NOTHING: a concurrent twin's row is as good as ours."""
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": postgresql_insert, "sqlite": sqlite_insert}[dialect]
    session.execute(insert(model).values(**values).on_conflict_do_nothing())


def republish(session: Session, number: int, sign: Callable[[int, list[int]], str]) -> None:
    """Sign list ``number`` again with the bits of every revoked certificate in it."""
    # the row is written first, so concurrent revocations in one list publish one after another
    # (each sees the other's bit) instead of the later overwriting the earlier
    session.execute(
        update(StatusList)
        .where(StatusList.id == number)
        .values(published_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    revoked = session.scalars(
        select(Certificate.status_index).where(Certificate.status_list == number, Certificate.revoked_at.is_not(None))
    )
    listing = session.get(StatusList, number)
    listing.credential = sign(number, sorted(revoked))


def status_list(session: Session, number: int) -> StatusList:
    listing = session.get(StatusList, number) if isinstance(number, int) and 0 < number < 2**31 else None
    if listing is None:
        raise StatusListNotFound("No status list has this number.", {"list": str(number)[:20]})
    return listing


def publish_key(session: Session, key: credentials.SigningKey) -> None:
    """Record ``key``'s public half for good (the JWKS keeps every key that ever signed)."""
    public = {k: v for k, v in key.public_jwk.items() if k not in ("kid", "alg", "use")}
    _insert_if_absent(
        session,
        PublishedKey,
        thumbprint=key.thumbprint,
        alg=key.alg,
        public_jwk=json.dumps(public),
        first_used_at=utcnow(),
    )


def published_keys(session: Session) -> list[PublishedKey]:
    return list(session.scalars(select(PublishedKey).order_by(PublishedKey.first_used_at, PublishedKey.thumbprint)))
