"""The gateway's read copy of students on a real broker: it follows events through a queue of
its process's own, and a lost connection drops it (events sent meanwhile are lost with that
queue) until its queues are back."""

from __future__ import annotations

from nameko.standalone.events import event_dispatcher

from gateway.student_reads import StudentReads, follow
from tests.integration.conftest import wait_for


class Follower:
    name = "follower"
    student_reads = StudentReads()

    @follow("students", "student_updated")
    def handle_student_updated(self, payload: dict) -> None:
        self.student_reads.put(payload["student"])


STUDENT = {"id": 7, "name": "Ada", "version": 2, "status": "active", "status_version": 3}


def test_a_lost_connection_drops_the_copy_until_its_queues_are_back(container_factory, rabbit_config, rabbit_manager):
    container = container_factory(Follower, rabbit_config)
    container.start()
    reads = next(d for d in container.dependencies if isinstance(d, StudentReads))
    vhost = rabbit_config["vhost"]
    [queue] = [q for q in rabbit_manager.get_queues(vhost) if q["name"].startswith("evt-students-student_updated")]
    assert queue["exclusive"] and queue["auto_delete"], queue  # the process's own, gone with it

    event_dispatcher(rabbit_config)("students", "student_updated", {"student": STUDENT, "changes": ["name"]})
    assert wait_for(lambda: reads.get(7)).student == STUDENT

    generation = reads.generation
    # the management API lists a connection a few seconds after it opened
    doomed = wait_for(lambda: [c["name"] for c in rabbit_manager.get_connections() if c["vhost"] == vhost])
    for name in doomed:  # as a broker restart would
        rabbit_manager.delete_connection(name)
    wait_for(lambda: reads.generation >= generation + 2 and reads.live)  # dropped when lost, again when back
    assert reads.get(7) is None

    event_dispatcher(rabbit_config)("students", "student_updated", {"student": STUDENT, "changes": ["name"]})
    assert wait_for(lambda: reads.get(7)).student == STUDENT  # following again
