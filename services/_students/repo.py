"""Database operations of the students service (its own tables only)."""

from __future__ import annotations

from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services import lifecycle
from services._students.models import Student
from services.exceptions import EmailAlreadyExists, StudentNotFound, VersionMismatch
from services.infra.models import utcnow
from services.infra.pagination import keyset, page


def get(session: Session, student_id: int) -> Student:
    student = session.get(Student, student_id)
    if student is None:
        raise StudentNotFound(f"Student {student_id} not found.", {"student_id": student_id})
    return student


def get_by_email(session: Session, email: str) -> Student:
    normalised = email.strip().lower() if isinstance(email, str) else ""
    student = session.scalar(select(Student).where(Student.email == normalised)) if normalised else None
    if student is None:
        raise StudentNotFound("No student has this e-mail address.", {"email": str(email)[:320]})
    return student


def get_many(session: Session, student_ids: list[int]) -> list[Student]:
    if not student_ids:
        return []
    return list(session.scalars(select(Student).where(Student.id.in_(set(student_ids))).order_by(Student.id)))


def ids_by_email(session: Session, emails: list[str]) -> dict[str, int]:
    normalised = {email.strip().lower(): email for email in emails}
    if not normalised:
        return {}
    rows = session.execute(select(Student.email, Student.id).where(Student.email.in_(list(normalised))))
    return {normalised[email]: student_id for email, student_id in rows}


def _ensure_email_free(session: Session, email: str, student_id: int | None = None) -> None:
    owner = session.scalar(select(Student.id).where(Student.email == email))
    if owner is not None and owner != student_id:
        raise EmailAlreadyExists(f"A student with e-mail {email} already exists.", {"email": email})


def create(session: Session, fields: dict) -> Student:
    _ensure_email_free(session, fields["email"])
    now = utcnow()
    student = Student(**fields, status=lifecycle.INITIAL_STATUS, created_at=now, updated_at=now)
    session.add(student)
    try:
        session.flush()
    except IntegrityError:  # lost a race for the same e-mail
        raise EmailAlreadyExists(
            f"A student with e-mail {fields['email']} already exists.", {"email": fields["email"]}
        ) from None
    return student


def update_fields(session: Session, student_id: int, changes: dict, expected_version: int | None) -> Student:
    student = get(session, student_id)
    if expected_version is not None and student.version != expected_version:
        raise VersionMismatch(
            f"Student {student_id} is at version {student.version}, not {expected_version}.",
            {"student_id": student_id, "expected_version": expected_version, "current_version": student.version},
        )
    if "email" in changes:
        _ensure_email_free(session, changes["email"], student_id)
    # compare-and-set on the version: a concurrent writer cannot be overwritten
    result = session.execute(
        update(Student)
        .where(Student.id == student_id, Student.version == student.version)
        .values(**changes, version=Student.version + 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise VersionMismatch(f"Student {student_id} changed concurrently.", {"student_id": student_id})
    session.refresh(student)
    return student


def delete(session: Session, student_id: int) -> Student:
    student = get(session, student_id)
    session.delete(student)
    return student


def list_page(
    session: Session, status: str | None, course: str | None, limit: int, cursor: str | None, name: str | None = None
) -> tuple[list[Student], str | None]:
    query = keyset(Student, limit, cursor, status=status, course=course)
    if name:
        escaped = name.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        query = query.where(func.lower(Student.name).like(f"{escaped}%", escape="\\"))
    return page(list(session.scalars(query)), limit)


def apply_status_changes(session: Session, changes: list[dict]) -> None:
    """Update the read copy, skipping changes it already reflects (or a later one): one
    executemany for the whole batch, of each student's latest change in it (the others would
    be overwritten in the same transaction: a bulk job's batch of 2,000 changes over 512
    students is 512 updates)."""
    latest: dict[int, dict] = {}
    for change in changes:
        kept = latest.get(change["student_id"])
        if kept is None or change["version"] > kept["version"]:
            latest[change["student_id"]] = change
    if not latest:
        return
    changes = list(latest.values())
    table = Student.__table__
    session.execute(
        update(table)
        .where(table.c.id == bindparam("b_id"), table.c.status_version < bindparam("b_version"))
        .values(status=bindparam("b_status"), status_version=bindparam("b_version")),
        [{"b_id": c["student_id"], "b_status": c["to_status"], "b_version": c["version"]} for c in changes],
    )
