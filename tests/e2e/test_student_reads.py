"""GET /students/{id} from the gateway's copy of the students: its own writes show at once,
changes made elsewhere once their events arrive, and ETag / If-None-Match."""

from __future__ import annotations

from nameko.standalone.rpc import ClusterRpcProxy

from tests.e2e.support import System, assert_error, poll


def test_a_client_reads_its_own_writes_at_once(system: System, unique: str) -> None:
    student = system.create_student(unique)
    path = f"/students/{student['id']}"
    assert system.get(path).json() == student  # now in the gateway's copy
    for n in range(10):  # each read right after the write: no event has to arrive first
        current = system.get(path)
        patched = system.patch(path, json={"name": f"Name {n}"}, headers={"If-Match": current.headers["ETag"]})
        assert patched.status_code == 200, patched.text
        read = system.get(path)
        assert read.json() == patched.json() and read.json()["name"] == f"Name {n}"
        assert read.headers["ETag"] == patched.headers["ETag"] != current.headers["ETag"]
    assert system.delete(path).status_code == 204
    assert_error(system.get(path), 404, "STUDENT_NOT_FOUND")


def test_changes_made_elsewhere_show_once_their_event_arrives(system: System, unique: str) -> None:
    student = system.create_student(unique)
    path = f"/students/{student['id']}"
    first = system.get(path)
    assert first.json() == student
    with ClusterRpcProxy({"AMQP_URI": system.env["AMQP_URI"]}, timeout=10) as rpc:
        changed = rpc.students.update_student(student["id"], {"course": f"elsewhere-{unique}"})
    shown = poll(lambda: system.get(path), lambda r: r.json()["course"] == f"elsewhere-{unique}")
    assert shown.json() == changed and shown.headers["ETag"] != first.headers["ETag"]

    # a change of status alone: the status service's event
    system.settled_request(system.request_status(student["id"], "active", "start")["request_id"])
    active = poll(lambda: system.get(path), lambda r: r.json()["status"] == "active")
    assert active.json()["status_version"] > changed["status_version"]
    assert active.json()["version"] == changed["version"]
    assert active.headers["ETag"] != shown.headers["ETag"]


def test_a_current_etag_is_answered_304(system: System, unique: str) -> None:
    student = system.create_student(unique)
    path = f"/students/{student['id']}"
    first = system.get(path)
    etag = first.headers["ETag"]
    assert etag == f'"{student["version"]}.{student["status_version"]}"'
    for if_none_match in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        unchanged = system.get(path, headers={"If-None-Match": if_none_match})
        assert unchanged.status_code == 304, unchanged.text
        assert unchanged.content == b"" and unchanged.headers["ETag"] == etag
    assert system.get(path, headers={"If-None-Match": '"other"'}).json() == student

    patched = system.patch(path, json={"name": "Changed"}, headers={"If-Match": etag})
    assert patched.status_code == 200, patched.text
    again = system.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 200 and again.json()["name"] == "Changed"
    assert again.headers["ETag"] == patched.headers["ETag"] != etag
