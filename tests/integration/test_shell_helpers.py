"""tools/shell.py in a real ``nameko shell --config config.yaml`` session.

The shell runs as operators run it (a subprocess in the project directory,
``AMQP_URI`` pointing at this test's vhost), fed a script on stdin; the
services run in this process. The tests assert on what the session printed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from nameko.standalone.events import event_dispatcher

from tests.integration.conftest import settled, wait_for

ROOT = Path(__file__).resolve().parents[2]
NAMEKO = str(Path(sys.executable).parent / "nameko")
PROMPTS = re.compile(r"^(?:(?:>>>|\.\.\.) ?)+")


@pytest.fixture
def db_uris(request, tmp_path) -> dict[str, str]:
    """SQLite only: the shell talks RPC; the services' database is not what is tested."""
    from tests.conftest import make_db_uris

    return make_db_uris("sqlite", tmp_path, request)


def nameko_shell(amqp_uri: str, script: str, startup: bool = True) -> list[str]:
    """Run ``script`` in ``nameko shell``; return its output lines, prompts removed."""
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONSTARTUP", "PYTHONPATH")}
    env["AMQP_URI"] = amqp_uri
    env.update({"PYTHONSTARTUP": "tools/shell.py"} if startup else {"PYTHONPATH": str(ROOT)})
    result = subprocess.run(
        [NAMEKO, "shell", "--config", "config.yaml"],
        cwd=ROOT,
        env=env,
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return [PROMPTS.sub("", line) for line in result.stdout.splitlines()]


def line_with(lines: list[str], *parts: str) -> str:
    found = [line for line in lines if all(part in line for part in parts)]
    assert found, f"no line with {parts} in:\n" + "\n".join(lines)
    return found[0]


def test_operator_finds_a_student_changes_the_status_and_reads_the_history(config, rpc, unique):
    course = f"course-{unique}"
    ada = rpc.students.create_student({"name": "Ada", "email": f"ada.{unique}@school.example", "course": course})
    rpc.students.create_student({"name": "Alan", "email": f"alan.{unique}@school.example", "course": course})

    lines = nameko_shell(
        config["AMQP_URI"],
        f"""\
student = find_student("ADA.{unique}@School.Example")
print("FOUND", student["id"], student["email"])
done = change_status(student["id"], "active", reason="term starts")
print("CHANGED", done["state"], done["from_status"], done["status"], done["actor"], done["request_id"])
refused = change_status(student["id"], "enrolled")
print("REFUSED", refused["state"], refused["error"]["code"])
history(student["id"])
students(course="{course}")
students(course="{course}", limit=1)
find_student("nobody.{unique}@school.example")
help(tools.shell)
""",
    )

    assert line_with(lines, "mensageria helpers:", "find_student", "change_status", "history", "students")
    assert line_with(lines, "FOUND").split() == ["FOUND", str(ada["id"]), ada["email"]]
    changed = line_with(lines, "CHANGED").split()
    assert changed[1:4] == ["applied", "enrolled", "active"] and changed[4].startswith("shell")
    request_id = changed[5]
    assert line_with(lines, "REFUSED").split() == ["REFUSED", "rejected", "INVALID_TRANSITION"]

    # history: a table with one applied change (the refused one left none)
    header = line_with(lines, "occurred_at", "from_status", "to_status", "reason", "actor", "request_id")
    row = lines[lines.index(header) + 2].split()
    assert row[1:4] == ["enrolled", "active", "term"] and request_id in row
    assert lines[lines.index(header) + 3] == "(1 row)"

    # students: both of the course, oldest first
    header = line_with(lines, "id", "name", "email", "course", "status", "version")
    rows = lines[lines.index(header) + 2 : lines.index(header) + 5]
    assert [row.split()[0] for row in rows[:2]] == [str(ada["id"]), str(ada["id"] + 1)]
    assert f"ada.{unique}@school.example" in rows[0] and f"alan.{unique}@school.example" in rows[1]
    assert rows[2] == "(2 rows)"
    assert line_with(lines, "(1 row; more exist: pass a larger limit=)")

    assert line_with(lines, "no student with e-mail", f"nobody.{unique}")
    for signature in ("change_status(student_id", "find_student(email", "history(student_id", "students(status"):
        assert line_with(lines, signature)  # help(tools.shell) lists the helpers


def test_helpers_imported_by_hand_find_the_shells_n(config, rpc, unique):
    student = rpc.students.create_student({"name": "Grace", "email": f"grace.{unique}@school.example", "course": "x"})

    lines = nameko_shell(
        config["AMQP_URI"],
        f"""\
from tools.shell import *
print("FOUND", find_student("grace.{unique}@school.example")["id"])
print("STATE", change_status({student["id"]}, "withdrawn", reason="moved away")["state"])
print("ROWS", len(history({student["id"]})))
""",
        startup=False,
    )

    assert line_with(lines, "FOUND").split() == ["FOUND", str(student["id"])]
    assert line_with(lines, "STATE").split() == ["STATE", "applied"]
    assert line_with(lines, "ROWS").split() == ["ROWS", "1"]


def test_operator_revokes_resends_and_replays(config, rpc, unique):
    student = rpc.students.create_student({"name": "Hedy", "email": f"hedy.{unique}@school.example", "course": "Radio"})
    for target in ("active", "completed"):
        request = rpc.status.request_status_change(student["id"], target)
        wait_for(lambda rid=request["request_id"]: settled(rpc, rid))
    [certificate] = wait_for(lambda: rpc.certificates.list_certificates(student["id"]))
    mails = wait_for(lambda: len(rpc.notifications.list_notifications(student_id=student["id"])["items"]) == 3)
    assert mails
    event_dispatcher(config)("gateway", "status_change_requested", {"broken": unique})
    wait_for(rpc.status.list_dead_letters)

    lines = nameko_shell(
        config["AMQP_URI"],
        f"""certificates({student["id"]})
print("CHECKED", verify("{certificate["code"]}")["state"])
print("REVOKED", revoke("{certificate["code"]}", "issued in error")["status"])
print("CHECKED", verify("{certificate["code"]}")["state"])
notifications(student_id={student["id"]})
first = notifications(student_id={student["id"]})[0]
print("RESENT", resend(first["id"])["state"])
dead_letters("status")
print("REPLAYED", len(replay("status")["replayed"]))
""",
    )
    header = line_with(lines, "code", "course", "status", "issued_at")
    assert certificate["code"] in lines[lines.index(header) + 2] and "valid" in lines[lines.index(header) + 2]
    assert line_with(lines, "REVOKED").split() == ["REVOKED", "revoked"]
    assert [line.split() for line in lines if line.startswith("CHECKED")] == [
        ["CHECKED", "valid"],
        ["CHECKED", "revoked"],
    ]
    header = line_with(lines, "id", "kind", "recipient", "subject", "state")
    assert f"hedy.{unique}@school.example" in lines[lines.index(header) + 2]
    assert line_with(lines, "RESENT").split() == ["RESENT", "pending"]
    header = line_with(lines, "message_id", "handler", "routing_key", "attempts")
    assert "status.handle_status_change_requested" in lines[lines.index(header) + 2]
    assert line_with(lines, "REPLAYED").split() == ["REPLAYED", "1"]


def test_operator_submits_a_bulk_job_from_a_csv_file_and_waits_for_it(config, rpc, unique, tmp_path):
    ada = rpc.students.create_student({"name": "Ada", "email": f"ada.{unique}@school.example", "course": "x"})
    csv_file = tmp_path / "term.csv"
    csv_file.write_text(
        "student_id,email,status,reason\n"
        f"{ada['id']},,active,term starts\n"
        f",nobody.{unique}@school.example,active,\n"
        f"{ada['id']},,retired,\n"
        f",ADA.{unique}@school.example,suspended,by e-mail\n"
    )

    lines = nameko_shell(
        config["AMQP_URI"],
        f"""\
job = submit_job("{csv_file}", idempotency_key="{unique}")
done = wait_job(job["job_id"], every=0.2)
print("DONE", done["state"], done["total"], done["applied"], done["rejected"], done["pending"])
print("ERRORS", [(e["row"], e["code"]) for e in job_progress(job["job_id"])["errors"]])
print("AGAIN", submit_job("{csv_file}", idempotency_key="{unique}")["job_id"] == job["job_id"])
""",
    )

    assert line_with(lines, "DONE").split() == ["DONE", "done", "4", "2", "2", "0"]
    assert line_with(lines, "ERRORS") == "ERRORS [(2, 'STUDENT_NOT_FOUND'), (3, 'VALIDATION_ERROR')]"
    assert line_with(lines, "AGAIN") == "AGAIN True"
    assert line_with(lines, "done: total 4, pending 0, applied 2, rejected 2, failed 0")
    assert [h["to_status"] for h in rpc.status.get_status_history(ada["id"])["items"]] == ["active", "suspended"]
