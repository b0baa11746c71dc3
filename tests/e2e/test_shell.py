"""Operators drive the running system from ``nameko shell``."""

from __future__ import annotations

import re
import subprocess

import requests

from tests.e2e.support import CONFIG, NAMEKO, ROOT, System, bearer, poll

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


KEYS_SCRIPT = """\
key = create_key("{name}", ["students:read"])
print("KEY", key["id"], key["api_key"])
print("LISTED", [row for row in keys() if row["name"] == "{name}"])
input_done = input()
print("REVOKED", revoke_key(key["id"])["revoked"])
print("AUDIT", audit(key_id="{audited}", limit=5))
"""


def test_operator_manages_keys_and_reads_the_audit_from_nameko_shell(system: System, unique: str) -> None:
    name = f"made in the shell {unique}"
    audited, _ = system.create_key(f"audited {unique}", ["students:write"])
    with requests.Session() as session:
        session.headers.update(bearer(_))
        session.post(f"{system.base_url}/students", json={"name": "x"}, headers={"X-Actor": f"ops-{unique}"})
    shell = subprocess.Popen(
        [NAMEKO, "shell", "--config", CONFIG],
        cwd=ROOT,
        env={**system.env, "PYTHONSTARTUP": "tools/shell.py"},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    script = KEYS_SCRIPT.format(name=name, audited=audited["id"]).split("input_done = input()\n")
    shell.stdin.write(script[0] + "input_done = input()\n")
    shell.stdin.flush()
    key_line = _read_until(shell, "KEY ")
    key_id, key = key_line.split()[1:3]
    listed = _read_until(shell, "LISTED ")
    assert key_id in listed and name in listed and key not in listed and key.split("_")[2] not in listed
    assert system.session(key).get(f"{system.base_url}/students").status_code == 200

    stdout, stderr = shell.communicate("\n" + script[1], timeout=60)
    assert shell.returncode == 0, f"stdout:\n{stdout}\nstderr:\n{stderr}"
    assert "REVOKED True" in stdout, stdout
    assert f"ops-{unique}" in stdout and "/students" in stdout and "422" in stdout, stdout
    poll(lambda: system.session(key).get(f"{system.base_url}/students").status_code, lambda status: status == 401, 5)


def _read_until(process: subprocess.Popen, prefix: str) -> str:
    for line in process.stdout:
        line = PROMPTS.sub("", line)
        if line.startswith(prefix):
            return line.strip()
    raise AssertionError(f"the shell ended before printing {prefix!r}: {process.stderr.read()}")
