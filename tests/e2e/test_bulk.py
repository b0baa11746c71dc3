"""Bulk jobs over HTTP: CSV and JSON uploads, row-by-row refusals, idempotency,
and uploads refused as a whole (nothing of them is ever applied)."""

from __future__ import annotations

import json

from tests.e2e.support import BULK_MAX_ROWS, System, assert_error, poll


def job_when_done(system: System, location: str) -> dict:
    def fetch() -> dict:
        response = system.get(location)
        assert response.status_code == 200, response.text
        return response.json()

    return poll(fetch, lambda job: job["state"] == "done", timeout=30)


def upload(system: System, body: str | bytes, content_type: str, **headers: str):
    return system.post("/status-requests/bulk", data=body, headers={"Content-Type": content_type, **headers})


def statuses(system: System, *students: dict) -> list[str]:
    return [system.get(f"/students/{s['id']}").json()["status"] for s in students]


def test_csv_job_applies_valid_rows_and_refuses_the_rest_one_by_one(system: System, unique: str) -> None:
    ana, bea, cid = (system.create_student(f"{name}-{unique}") for name in ("ana", "bea", "cid"))
    csv = (
        "student_id,email,status,reason\n"
        f"{ana['id']},,active,term start\n"  # 1 applied
        f',BEA-{unique}@Example.org,active,"by e-mail, case-insensitive"\n'  # 2 applied
        f"{ana['id']},,active,again\n"  # 3 duplicate of row 1
        "2000000000,,active,\n"  # 4 no such student
        f",nobody-{unique}@example.org,active,\n"  # 5 no such e-mail
        f"{cid['id']},,retired,\n"  # 6 invalid status
        ",,active,\n"  # 7 no student at all
        f"{cid['id']},,completed,\n"  # 8 enrolled -> completed is not allowed
        f"{ana['id']},,suspended,term end\n"  # 9 applied, after row 1
    )
    accepted = upload(system, csv, "text/csv", **{"X-Actor": "registrar"})
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"]
    assert accepted.headers["Location"] == f"/jobs/{job_id}"
    assert accepted.json()["total"] == 9 and accepted.json()["state"] in ("running", "done")

    job = job_when_done(system, accepted.headers["Location"])
    counts = {key: job[key] for key in ("total", "pending", "applied", "rejected", "failed")}
    assert counts == {"total": 9, "pending": 0, "applied": 3, "rejected": 6, "failed": 0}, job
    assert [(e["row"], e["code"]) for e in job["errors"]] == [
        (3, "DUPLICATE_ROW"),
        (4, "STUDENT_NOT_FOUND"),
        (5, "STUDENT_NOT_FOUND"),
        (6, "VALIDATION_ERROR"),
        (7, "VALIDATION_ERROR"),
        (8, "INVALID_TRANSITION"),
    ], job["errors"]
    assert "status" in job["errors"][3]["details"] and job["errors"][5]["details"]["student_id"] == cid["id"]
    assert job["rows_per_second"] > 0 and job["finished_at"]
    assert (job["actor"], job["on_behalf_of"]) == ("e2e tests", "registrar")

    assert [(h["to_status"], h["actor"], h["on_behalf_of"]) for h in system.history(ana["id"])] == [
        ("active", "e2e tests", "registrar"),
        ("suspended", "e2e tests", "registrar"),
    ]
    assert [h["reason"] for h in system.history(bea["id"])] == ["by e-mail, case-insensitive"]
    poll(lambda: statuses(system, ana, bea, cid), lambda found: found == ["suspended", "active", "enrolled"])


def test_json_job_with_mixed_rows_and_a_repeated_idempotency_key(system: System, unique: str) -> None:
    dan, eva = system.create_student(f"dan-{unique}"), system.create_student(f"eva-{unique}")
    rows = [
        {"student_id": dan["id"], "status": "active", "reason": "start"},
        "not an object",
        {"student_id": eva["id"], "status": "active", "grade": 20},  # unknown field
        {"email": f"eva-{unique}@example.org", "status": "withdrawn"},
        {"student_id": True, "status": "active"},
    ]
    key = f"term-close-{unique}"
    first = upload(system, json.dumps(rows), "application/json", **{"Idempotency-Key": key})
    assert first.status_code == 202, first.text
    job = job_when_done(system, first.headers["Location"])
    assert (job["total"], job["applied"], job["rejected"]) == (5, 2, 3), job
    assert [(e["row"], e["code"]) for e in job["errors"]] == [
        (2, "VALIDATION_ERROR"),
        (3, "VALIDATION_ERROR"),
        (5, "VALIDATION_ERROR"),
    ]
    assert "grade" in job["errors"][1]["details"]

    again = upload(system, json.dumps(rows), "application/json", **{"Idempotency-Key": key})
    assert again.status_code == 202 and again.json()["job_id"] == job["job_id"], again.text
    assert len(system.history(dan["id"])) == 1 and len(system.history(eva["id"])) == 1  # nothing applied twice


def test_uploads_refused_as_a_whole_apply_nothing(system: System, unique: str) -> None:
    fay = system.create_student(f"fay-{unique}")
    valid = f"student_id,status\n{fay['id']},active\n"

    broken = f'[{{"student_id": {fay["id"]}, "status": "active"}}, {{"student_id": '
    assert_error(upload(system, broken, "application/json"), 400, "MALFORMED_JSON")
    too_many = valid + "".join(f"{fay['id']},{'suspended' if n % 2 else 'active'}\n" for n in range(BULK_MAX_ROWS))
    refused = assert_error(upload(system, too_many, "text/csv"), 413, "PAYLOAD_TOO_LARGE")
    assert refused == {"max_rows": BULK_MAX_ROWS}
    assert_error(upload(system, valid, "text/plain"), 415, "UNSUPPORTED_MEDIA_TYPE")
    assert_error(upload(system, f"id,status\n{fay['id']},active\n", "text/csv"), 422, "VALIDATION_ERROR")
    assert_error(system.get("/jobs/00000000-0000-4000-8000-000000000000"), 404, "JOB_NOT_FOUND")

    # the first row of each refused upload was valid: none of them was applied
    accepted = upload(system, valid, "text/csv")
    assert accepted.status_code == 202, accepted.text
    assert job_when_done(system, accepted.headers["Location"])["applied"] == 1
    assert [h["to_status"] for h in system.history(fay["id"])] == ["active"]


def test_a_job_of_several_chunks_is_applied_in_row_order(system: System, unique: str) -> None:
    """The gateway stores a chunk while it reads the next: the rows still arrive, and are applied, in
    their order, their row numbers running on across chunks. Four rows in three chunks apply (each
    move is allowed only after the one before it); every other row is refused on its own (no mail
    for the rest of the run to wait behind)."""
    gus = system.create_student(f"gus-{unique}")
    total = BULK_MAX_ROWS - 1  # chunks of 2,000: rows 1-2000, 2001-4000, 4001-4999
    applied = {1: "active", 2500: "suspended", 4500: "active", total: "withdrawn"}
    lines = ["student_id,status,reason"]
    lines += [f"{gus['id']},{applied.get(row, 'retired')},row {row}" for row in range(1, total + 1)]
    accepted = upload(system, "\n".join(lines) + "\n", "text/csv")
    assert accepted.status_code == 202, accepted.text
    job = job_when_done(system, accepted.headers["Location"])
    assert (job["total"], job["applied"], job["rejected"]) == (total, 4, total - 4), job
    assert (job["errors"][0]["row"], job["errors"][0]["code"]) == (2, "VALIDATION_ERROR")
    assert [(h["to_status"], h["reason"]) for h in system.history(gus["id"])] == [
        (status, f"row {row}") for row, status in applied.items()
    ]
