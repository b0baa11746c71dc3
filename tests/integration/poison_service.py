"""A service whose RPC method kills its own process, run by ``nameko run`` in
tests/integration/test_quorum_queues.py: the request it had in hand goes back to its queue."""

from __future__ import annotations

import os

from services.infra.inbound import rpc


class Crasher:
    name = "crasher"

    @rpc
    def explode(self) -> None:
        os._exit(3)  # as a segfault or the OOM killer would: no ack, no nack, no goodbye
