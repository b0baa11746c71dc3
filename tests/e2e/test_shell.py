"""Operators drive the running system from ``nameko shell``."""

from __future__ import annotations

import re
import subprocess

from tests.e2e.support import CONFIG, NAMEKO, ROOT, System

SCRIPT = """\
import time
course = "{course}"
student = n.rpc.students.create_student({{"name": "Grace Hopper", "email": "{email}", "course": course}})
print("CREATED", student["id"], student["email"], student["status"])
request = n.rpc.status.request_status_change(student["id"], "active", reason="by the operator", actor="operator")
print("REQUESTED", request["request_id"], request["state"])
state = lambda: n.rpc.status.get_status_request(request["request_id"])["state"]
listed = lambda: n.rpc.students.list_students(course=course)
deadline = time.monotonic() + 20
while state() == "pending" and time.monotonic() < deadline: time.sleep(0.1)

print("STATE", state())
print("HISTORY", n.rpc.status.get_status_history(student["id"]))
while listed()["items"][0]["status"] != "active" and time.monotonic() < deadline: time.sleep(0.1)

print("LISTED", listed())
n.disconnect()
"""

PROMPTS = re.compile(r"^(?:(?:>>>|\.\.\.) ?)+")


def test_operator_changes_a_status_from_nameko_shell(system: System, unique: str) -> None:
    email, course = f"grace.{unique}@example.org", f"shell-{unique}"
    result = subprocess.run(
        [NAMEKO, "shell", "--config", CONFIG],
        cwd=ROOT,
        env=system.env,
        input=SCRIPT.format(email=email, course=course),
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = (PROMPTS.sub("", line) for line in result.stdout.splitlines())
    output = {line.split(" ", 1)[0]: line for line in lines if " " in line}
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert email in output["CREATED"] and "enrolled" in output["CREATED"], result.stdout
    request_id = output["REQUESTED"].split()[1]
    assert output["STATE"].endswith("applied"), result.stdout
    for expected in (request_id, "'to_status': 'active'", "'from_status': 'enrolled'", "by the operator", "operator"):
        assert expected in output["HISTORY"], result.stdout
    for expected in (email, course, "'status': 'active'"):
        assert expected in output["LISTED"], result.stdout

    # and the HTTP side sees the same student
    student_id = int(output["CREATED"].split()[1])
    assert system.get(f"/students/{student_id}").json()["email"] == email
