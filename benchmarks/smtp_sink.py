"""A real SMTP server that counts what it receives, for scenario (f).

aiosmtpd in a child process of its own (``python -m benchmarks.smtp_sink PORT LOG``), on a free
loopback port: the services and the Celery tasks of (f) send their mail to it over a real SMTP
exchange. For every message it accepts it appends one line to ``LOG``: its recipients
(comma-separated), its size in bytes, and ``pdf`` if it carries a PDF (else ``-``). The runner
counts those lines (:meth:`SmtpSink.received`): a mail exists once the sink has accepted it.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.infra import PYTHON, Cleanup, free_port, start_process

START_TIMEOUT = 30.0
POLL = 0.05
STALL_TIMEOUT = 120.0  # give up waiting when no mail arrives for this long


@dataclass
class Received:
    """What the sink accepted for recipients containing a tag: mails, and those with a PDF."""

    mails: int = 0
    with_pdf: int = 0
    bytes: int = 0


@dataclass
class SmtpSink:
    port: int
    log: Path
    pid: int
    _offset: int = 0
    _lines: list[tuple[str, int, bool]] = field(default_factory=list)
    _counted: dict[str, tuple[int, Received]] = field(default_factory=dict)  # tag -> (lines counted, counts)

    @classmethod
    def start(cls, cleanup: Cleanup, directory: Path) -> SmtpSink:
        directory.mkdir(parents=True, exist_ok=True)
        port, log = free_port(), directory / "received.log"
        log.touch()
        command = [PYTHON, "-m", "benchmarks.smtp_sink", str(port), str(log)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = start_process(cleanup, "smtp sink", command, env, directory / "sink.log")
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"the SMTP sink exited ({process.returncode}); see {directory / 'sink.log'}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                if conn.recv(64).startswith(b"220"):
                    return cls(port, log, process.pid)
            time.sleep(0.1)
        raise RuntimeError(f"the SMTP sink did not answer on port {port} within {START_TIMEOUT:g}s")

    def received(self, tag: str) -> Received:
        """Counts for the recipients containing ``tag`` (reads and counts only what was appended since
        last time: it is polled while the mail arrives, on the cores the mail is sent from)."""
        with open(self.log, "rb") as handle:
            handle.seek(self._offset)
            chunk = handle.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line being written is read next time
        self._offset += len(complete)
        for line in complete.decode().splitlines():
            recipients, size, pdf = line.split("\t")
            self._lines.append((recipients, int(size), pdf == "pdf"))
        counted, found = self._counted.get(tag, (0, Received()))
        for recipients, size, pdf in self._lines[counted:]:
            if tag in recipients:
                found.mails += 1
                found.with_pdf += pdf
                found.bytes += size
        self._counted[tag] = (len(self._lines), found)
        return Received(found.mails, found.with_pdf, found.bytes)

    def wait_for(self, tag: str, count: int, check: Callable[[], None]) -> float:
        """When ``count`` mails for ``tag`` have been received (polled every ``POLL`` s; ``check()``
        raises if what sends them died); fails if none arrives for ``STALL_TIMEOUT`` seconds."""
        received, moved = 0, time.monotonic()
        while received < count:
            time.sleep(POLL)
            check()
            now, latest = time.monotonic(), self.received(tag).mails
            if latest != received:
                received, moved = latest, now
            elif now - moved > STALL_TIMEOUT:
                raise RuntimeError(f"{received:,}/{count:,} mails received, none for {STALL_TIMEOUT:g}s")
        return time.monotonic()


def _serve(port: int, log_path: str) -> None:
    from aiosmtpd.controller import Controller  # the server's own import: the runner only reads its log

    class CountingHandler:
        async def handle_DATA(self, server, session, envelope) -> str:
            content = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
            pdf = "pdf" if b"application/pdf" in content else "-"
            log.write(f"{','.join(envelope.rcpt_tos)}\t{len(content)}\t{pdf}\n")
            return "250 OK"

    with open(log_path, "a", buffering=1) as log:  # line-buffered: each line whole when written
        controller = Controller(CountingHandler(), hostname="127.0.0.1", port=port)
        controller.start()
        threading.Event().wait()  # serves on the controller's thread until SIGTERM ends the process


if __name__ == "__main__":
    _serve(int(sys.argv[1]), sys.argv[2])
