"""Several gateway processes on one port (``GATEWAY_PROCESSES``): the setting, each process's
environment, and the way a process's writes reach its siblings' read copies before it answers
(real Unix datagram sockets in a temporary directory)."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from gateway.siblings import Siblings
from gateway.student_reads import StudentReads
from services.infra.settings import ConfigError, Settings
from tools.launch import child_environment, gateway_env


def student(student_id: int = 1, version: int = 1, name: str = "Ada") -> dict:
    return {"id": student_id, "name": name, "version": version, "status": "enrolled", "status_version": 1}


@pytest.fixture
def directory(tmp_path) -> Path:
    path = tmp_path / "gw"  # Unix socket paths are short: keep it under tmp_path's own length
    path.mkdir(mode=0o700)
    return path


@pytest.fixture
def opened(directory):
    made: list[Siblings] = []

    def open_sibling(name: str, **options) -> Siblings:
        siblings = Siblings(str(directory), name=name, **options)
        siblings.open()
        made.append(siblings)
        return siblings

    yield open_sibling
    for siblings in made:
        siblings.close()


# --- the setting and each process's environment --------------------------------------------


def test_one_process_by_default_and_a_whole_number_of_at_least_one():
    assert Settings().gateway_processes == 1
    assert Settings.from_config({"GATEWAY_PROCESSES": "3"}).gateway_processes == 3
    with pytest.raises(ConfigError, match="GATEWAY_PROCESSES must be at least 1, got '0'"):
        Settings.from_config({"GATEWAY_PROCESSES": "0"})
    with pytest.raises(ConfigError, match="GATEWAY_PROCESSES must be a whole number, got 'many'"):
        Settings.from_config({"GATEWAY_PROCESSES": "many"})


def test_each_process_gets_its_own_metrics_port_counting_down_and_the_shared_directory():
    assert [gateway_env(i, 9180, "/run/gw")["METRICS_PORT_GATEWAY"] for i in range(4)] == [
        "9180",
        "9179",
        "9178",
        "9177",
    ]
    assert {gateway_env(i, 9180, "/run/gw")["GATEWAY_SIBLINGS_DIR"] for i in range(4)} == {"/run/gw"}
    assert [gateway_env(i, 0, "/run/gw")["METRICS_PORT_GATEWAY"] for i in range(3)] == ["0", "0", "0"]
    assert gateway_env(2, 2, "/run/gw")["METRICS_PORT_GATEWAY"] == "0"  # no port 0 or below


# --- siblings -------------------------------------------------------------------------------


def test_a_message_reaches_every_other_process_at_once_and_not_the_sender(opened):
    a, b, c = opened("a"), opened("b"), opened("c")
    assert a.send(b"one") == 2
    assert a.send(b"two") == 2
    assert b.receive() == [b"one", b"two"]  # waiting already when send returned, in order
    assert c.receive() == [b"one", b"two"]
    assert a.receive() == [] and b.receive() == []  # nothing waits for more


def test_a_dead_siblings_socket_is_removed_and_fails_nothing(opened, directory):
    a, b = opened("a"), opened("b")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    dead.bind(str(directory / "4242.sock"))
    dead.close()  # its process is gone; its file is left
    assert a.send(b"one") == 1
    assert not (directory / "4242.sock").exists()
    assert b.receive() == [b"one"]


def test_a_sibling_that_reads_nothing_makes_the_sender_wait_a_bounded_time(opened, caplog):
    a, stuck = opened("a", wait=0.05), opened("stuck")
    started = time.monotonic()
    sent = [a.send(b"x" * 100) for _ in range(30)]  # more than the kernel queues (10 by default)
    assert sent[0] == 1 and sent[-1] == 0
    assert time.monotonic() - started < 30 * 0.05 + 2  # each message waited at most 0.05 s
    assert "took no message" in caplog.text
    assert len(stuck.receive()) == sent.count(1)


def test_close_removes_the_socket_and_no_directory_is_no_sibling(opened, directory):
    a = opened("a")
    assert (directory / "a.sock").exists()
    a.close()
    assert not (directory / "a.sock").exists()
    assert Siblings(str(directory / "gone"), name="x").others() == []


# --- the read copies of two processes ---------------------------------------------------------


def reads_in(directory: Path, name: str) -> StudentReads:
    reads = StudentReads()
    reads.container = SimpleNamespace(config={"STUDENT_READ_CACHE_SIZE": 100})
    reads.setup()
    reads.siblings = Siblings(str(directory), name=name)  # two processes' copies in one test process
    reads.siblings.open()
    reads.restart(live=True)
    return reads


@pytest.fixture
def two_processes(directory):
    a, b = reads_in(directory, "a"), reads_in(directory, "b")
    yield a, b
    a.stop()
    b.stop()


def never(student_id: int) -> dict:
    raise AssertionError("asked the students service")


def test_a_siblings_write_is_read_at_once_and_late_events_never_take_it_back(two_processes):
    a, b = two_processes
    a.wrote(student(version=1))
    assert b.read(1, never).student == student(version=1)  # created through A: B knows it
    a.wrote(student(version=2, name="New"))
    assert b.read(1, never).student["name"] == "New"
    b.put(student(version=1))  # the event of the older write, arriving late
    assert b.read(1, never).student["name"] == "New"
    begun = b.generation  # a read begun before the write, answered by the service after it
    assert b.fill(student(version=1), begun).student["name"] == "New"


def test_a_siblings_deletion_is_seen_at_once(two_processes):
    a, b = two_processes
    b.put(student())
    a.wrote_deletion(1)
    b.catch_up()
    assert b.get(1) is None
    b.put(student(version=2))  # an update event that arrives after the deletion
    assert b.get(1) is None


def test_nothing_is_sent_without_siblings_or_with_the_copy_off(directory):
    alone = StudentReads()
    alone.container = SimpleNamespace(config={"STUDENT_READ_CACHE_SIZE": 100})
    alone.setup()
    assert alone.siblings is None
    off = StudentReads()
    off.container = SimpleNamespace(config={"STUDENT_READ_CACHE_SIZE": 0, "GATEWAY_SIBLINGS_DIR": str(directory)})
    off.setup()
    assert off.siblings is None and os.listdir(directory) == []


def test_the_process_socket_is_named_by_its_pid_and_removed_when_it_stops(directory):
    reads = StudentReads()
    reads.container = SimpleNamespace(config={"GATEWAY_SIBLINGS_DIR": str(directory)})
    reads.setup()
    assert os.listdir(directory) == [f"{os.getpid()}.sock"]
    reads.stop()
    assert os.listdir(directory) == []


def test_a_message_not_understood_is_logged_and_changes_nothing(two_processes, caplog):
    a, b = two_processes
    b.put(student())
    a.siblings.send(b"not json")
    a.siblings.send(b'{"deleted": "x"}')
    b.catch_up()
    assert b.get(1) is not None
    assert caplog.text.count("not understood") == 2


def test_the_gateways_processes_take_gateway_max_workers_as_their_max_workers():
    gateway, status = ["gateway.service"], ["services.status"]
    assert child_environment(gateway, Settings()) == {"MAX_WORKERS": "64"}
    assert child_environment(gateway, Settings.from_config({"GATEWAY_MAX_WORKERS": "200"})) == {"MAX_WORKERS": "200"}
    assert child_environment(gateway, Settings.from_config({"GATEWAY_MAX_WORKERS": "0"})) == {}, "0: MAX_WORKERS"
    assert child_environment(status, Settings.from_config({"GATEWAY_MAX_WORKERS": "200"})) == {}
    assert child_environment([*gateway, *status], Settings()) == {}, "several modules in one process: as started"
