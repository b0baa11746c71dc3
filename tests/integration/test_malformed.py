"""Bad input at the AMQP edge, sent as a caller in another language would (plain pika in a
process of its own): RPC requests get a typed error reply at once, events are parked with
their raw bytes, and a valid message right after is handled as usual."""

from __future__ import annotations

import base64
import json
import pickle
import subprocess
import sys
import uuid

import pytest
from nameko.exceptions import deserialize

from clients import errors as client_errors
from services.exceptions import MalformedRequest, StudentNotFound
from tests.conftest import service_config
from tests.integration.conftest import settled, wait_for
from tests.integration.test_reliability import tracked
from tests.integration.test_students import new_student

LIMIT = 65536  # MAX_MESSAGE_BYTES in these tests
KEPT = 1024  # DEAD_LETTER_BODY_BYTES
JSON = "application/json"

BAD_BODIES = {
    "not-json": (b"\xff not json", JSON),
    "pickle": (pickle.dumps({"args": [1], "kwargs": {}}), "application/x-python-serialize"),
    "yaml": (b"args: [1]\nkwargs: {}\n", "application/x-yaml"),
    "no-content-type": (b'{"args": [1], "kwargs": {}}', ""),
    "over-the-limit": (json.dumps({"args": ["x" * LIMIT], "kwargs": {}}).encode(), JSON),
}
BAD_RPC_BODIES = {
    **BAD_BODIES,
    "json-array": (b"[1, 2]", JSON),
    "args-not-a-list": (b'{"args": 1, "kwargs": {}}', JSON),
}


@pytest.fixture
def config(rabbit_config, db_uris, tmp_path) -> dict:
    return service_config(
        rabbit_config["AMQP_URI"],
        db_uris,
        MAIL_DIR=str(tmp_path / "mail"),
        MAX_MESSAGE_BYTES=LIMIT,
        DEAD_LETTER_BODY_BYTES=KEPT,
    )


def publish_raw(config: dict, messages: list[dict], wait: float = 5.0) -> list[dict]:
    """Publish from a plain-pika process (no nameko, no eventlet); the replies it got."""
    specs = [{**m, "body": base64.b64encode(m["body"]).decode()} for m in messages]
    result = subprocess.run(
        [sys.executable, "-m", "tests.integration.raw_amqp", config["AMQP_URI"], "--wait", str(wait)],
        input=json.dumps(specs),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "nameko" not in result.stderr and "eventlet" not in result.stderr.lower()
    return json.loads(result.stdout)


def rpc_message(method: str, body: bytes, content_type: str, reply: bool = True) -> dict:
    return {
        "exchange": "nameko-rpc",
        "routing_key": f"students.{method}",
        "body": body,
        "content_type": content_type,
        "reply": reply,
    }


def test_malformed_rpc_requests_get_a_typed_error_reply_at_once(config, rpc, unique):
    student = new_student(rpc, unique)
    cases = list(BAD_RPC_BODIES.items())
    valid = json.dumps({"args": [student["id"]], "kwargs": {}}).encode()
    unknown = json.dumps({"args": [10**9], "kwargs": {}}).encode()
    messages = [rpc_message("get_student", body, content_type) for _, (body, content_type) in cases]
    messages += [rpc_message("get_student", valid, JSON), rpc_message("get_student", unknown, JSON)]

    replies = publish_raw(config, messages)

    for (name, _), reply in zip(cases, replies, strict=False):
        assert reply["reply"] is not None, f"{name}: no reply"
        # at once rather than never (None after --wait, 5 s), with room for a loaded machine
        assert reply["seconds"] < 2.5, f"{name}: answered after {reply['seconds']:.2f}s"
        error = reply["reply"]["error"]
        assert error["exc_path"] == "services.exceptions.MalformedRequest", (name, error)
        remote = deserialize(error)  # what a nameko caller raises
        assert isinstance(remote, MalformedRequest) and remote.code == "MALFORMED_REQUEST"
        assert remote.message == remote.details["reason"]
        client_side = client_errors.remote_error(error)  # what the pika client raises
        assert isinstance(client_side, client_errors.MalformedRequest), name
    reasons = {name: deserialize(r["reply"]["error"]).message for (name, _), r in zip(cases, replies, strict=False)}
    assert "larger than the limit of 65536 bytes" in reasons["over-the-limit"]
    assert "'application/x-python-serialize' is refused" in reasons["pickle"]
    assert "'application/x-yaml' is refused" in reasons["yaml"]
    assert "not valid JSON" in reasons["not-json"]
    assert '{"args": [...], "kwargs": {...}}' in reasons["json-array"]

    ok, not_found = replies[-2:]
    assert ok["reply"]["error"] is None and ok["reply"]["result"]["id"] == student["id"]
    assert isinstance(deserialize(not_found["reply"]["error"]), StudentNotFound)
    assert rpc.students.list_dead_letters() == [], "answered requests are not parked"


def test_malformed_rpc_request_without_reply_to_is_parked(config, rpc):
    publish_raw(config, [rpc_message("get_student", b"\xff not json", JSON, reply=False)])
    parked = wait_for(rpc.students.list_dead_letters)
    assert len(parked) == 1
    letter = parked[0]
    assert letter["malformed"] is True and letter["handler"] == "students.rpc"
    assert letter["queue"] == "rpc-students" and letter["routing_key"] == "students.get_student"
    assert base64.b64decode(letter["payload"]["raw_body"]) == b"\xff not json"


def test_malformed_events_are_parked_with_their_raw_body_and_valid_ones_go_on(config, rpc, unique):
    student = new_student(rpc, unique)
    wait_for(lambda: tracked(rpc, student["id"]))  # student_created has arrived
    cases = list(BAD_BODIES.items())
    request_id = str(uuid.uuid4())
    valid = {"request_id": request_id, "student_id": student["id"], "status": "active", "actor": "raw"}
    messages = [
        {"exchange": "gateway.events", "routing_key": "status_change_requested", "body": body, "content_type": ctype}
        for _, (body, ctype) in cases
    ]
    messages.append(
        {
            "exchange": "gateway.events",
            "routing_key": "status_change_requested",
            "body": json.dumps(valid).encode(),
            "content_type": JSON,
        }
    )

    publish_raw(config, messages)

    assert wait_for(lambda: settled(rpc, request_id))["state"] == "applied"
    parked = wait_for(lambda: (letters := rpc.status.list_dead_letters()) and len(letters) >= len(cases) and letters)
    assert len(parked) == len(cases)
    # refusals are published concurrently: match each case to its letter by the bytes kept
    by_body = {base64.b64decode(letter["payload"]["raw_body"]): letter for letter in parked}
    for name, (body, content_type) in cases:
        letter = by_body[body[:KEPT]]
        assert letter["malformed"] is True, name
        assert letter["handler"] == "status.handle_status_change_requested", name
        assert (letter["exchange"], letter["routing_key"]) == ("gateway.events", "status_change_requested")
        assert letter["error"].startswith("MalformedRequest: "), (name, letter["error"])
        kept = letter["payload"]
        assert kept["content_type"] in ({content_type, None} if not content_type else {content_type}), name
        assert kept["raw_bytes"] == len(body) and kept["truncated"] is (len(body) > KEPT), name
    replayed = rpc.status.replay_dead_letters()
    assert replayed["replayed"] == [] and sorted(replayed["not_replayable"]) == sorted(p["message_id"] for p in parked)
    assert rpc.status.purge_dead_letters() == {"purged": len(cases)}
    assert rpc.status.get_current_status(student["id"])["status"] == "active"
