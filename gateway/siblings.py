"""The other processes of one gateway, told of this one's writes.

With ``GATEWAY_PROCESSES`` above 1, ``tools.launch`` runs that many gateway processes on one
address and gives them one directory of their own (``GATEWAY_SIBLINGS_DIR``, mode 0700). Each
binds a Unix datagram socket there, named by its pid, and sends each message to every other
socket in the directory. A datagram is in its receiver's queue when ``sendto`` returns, so a
message sent before a process answers its client is waiting for any sibling that takes that
client's next request; the receiver reads its queue without waiting::

    siblings = Siblings("/run/mensageria-gateway")
    siblings.open()
    siblings.send(b'{"deleted": 7}')  # before the client hears back
    for message in siblings.receive():  # at the start of a read, in another process
        ...

A socket file nobody holds any more (its process is gone) is removed by the first sender that
finds it; a sibling whose queue stays full for ``wait`` seconds (a process frozen, not reading)
misses the message, with a warning logged. Neither fails the sender.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from pathlib import Path

__all__ = ["Siblings"]

log = logging.getLogger(__name__)

SUFFIX = ".sock"
MAX_MESSAGE = 64 * 1024
SEND_WAIT = 1.0  # seconds a sender waits for room in a sibling's queue (the kernel's default holds 10 messages)
RETRY = 0.001


class Siblings:
    """This process's socket in ``directory`` (named by its pid, unless ``name`` is given), and
    the way to the others'."""

    def __init__(self, directory: str, wait: float = SEND_WAIT, name: str | None = None):
        self.directory = Path(directory)
        self.path = self.directory / f"{name or os.getpid()}{SUFFIX}"
        self.wait = wait
        self.socket: socket.socket | None = None

    def open(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # left by an earlier process of the same pid
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sock.bind(str(self.path))
        self.socket = sock

    def close(self) -> None:
        if self.socket is None:
            return
        self.socket.close()
        self.socket = None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def fileno(self) -> int:
        return self.socket.fileno()

    def send(self, message: bytes) -> int:
        """``message`` to every other process of the gateway; how many took it."""
        return sum(self._send_to(path, message) for path in self.others())

    def others(self) -> list[Path]:
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return [self.directory / name for name in names if name.endswith(SUFFIX) and name != self.path.name]

    def receive(self) -> list[bytes]:
        """Every message waiting for this process, without waiting for more."""
        messages = []
        while True:
            try:
                messages.append(self.socket.recv(MAX_MESSAGE))
            except (BlockingIOError, InterruptedError):
                return messages

    def _send_to(self, path: Path, message: bytes) -> bool:
        deadline = time.monotonic() + self.wait
        while True:
            try:
                self.socket.sendto(message, str(path))
                return True
            except (ConnectionRefusedError, FileNotFoundError):  # nobody holds it: its process is gone
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                return False
            except (BlockingIOError, InterruptedError):  # its queue is full: it reads it between requests
                if time.monotonic() >= deadline:
                    log.warning("gateway sibling %s took no message for %gs; it misses one", path.name, self.wait)
                    return False
                time.sleep(RETRY)
            except OSError as exc:
                log.warning("gateway sibling %s: cannot send (%s)", path.name, exc)
                return False
