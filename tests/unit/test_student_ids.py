"""A student's id is never given to another student, on the migrated SQLite database too."""

from __future__ import annotations

from sqlalchemy import create_engine, text
from sqlalchemy.orm import sessionmaker

from services._students import repo
from tools.migrate import upgrade


def test_the_id_of_a_deleted_newest_student_is_not_reused(tmp_path):
    uri = f"sqlite:///{tmp_path}/students.db"
    upgrade({"DB_URIS": {"students:StudentsBase": uri}}, services=("students",))
    engine = create_engine(uri)
    Session = sessionmaker(bind=engine, expire_on_commit=False)
    with Session.begin() as session:
        first = repo.create(session, {"name": "Ana", "email": "ana@school.example", "course": "ops"}).id
    with Session.begin() as session:
        repo.delete(session, first)
    with Session.begin() as session:
        second = repo.create(session, {"name": "Bia", "email": "bia@school.example", "course": "ops"}).id
    assert second > first
    with engine.connect() as connection:  # the table keeps its indexes through the rebuild
        indexes = {row[1] for row in connection.execute(text("PRAGMA index_list('students')"))}
    assert any("course" in name for name in indexes) and any("status" in name for name in indexes)
    engine.dispose()
