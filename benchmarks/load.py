"""A closed-loop HTTP load generator: one asyncio task per client, each sending
its own list of requests one after another over a kept-alive connection
(:class:`HttpConnection`, HTTP/1.1 written and read directly). One process; at
the rates the gateway reaches it uses a small share of a core (the runner
reports its CPU next to the servers')."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from benchmarks.core import percentile


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    json: dict | None = None


@dataclass
class LoadResult:
    expected: int  # the status code that counts as success
    started: float = 0.0  # time.monotonic() of the first request
    finished: float = 0.0  # ... and of the last answer
    latencies: list[float] = field(default_factory=list)  # seconds, successful calls only
    statuses: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # exceptions by type

    @property
    def ok(self) -> int:
        return self.statuses[self.expected]

    @property
    def rate(self) -> float:
        return self.ok / max(self.finished - self.started, 1e-9)

    def percentile_ms(self, q: float) -> float | None:
        value = percentile(sorted(self.latencies), q)
        return None if value is None else value * 1000

    def failures(self) -> str:
        other = {code: n for code, n in self.statuses.items() if code != self.expected}
        parts = [f"{n} x {code}" for code, n in sorted(other.items())]
        parts += [f"{n} x {name}" for name, n in sorted(self.errors.items())]
        return ", ".join(parts)


class HttpConnection:
    """One kept-alive HTTP/1.1 connection, as lean as a client can be: each request's bytes
    written at once, the answer's status line and fields read, its body read by its
    ``Content-Length`` (or its chunks) and discarded. The generator shares the measured
    machine's cores: aiohttp took ≈ 0.20 ms of CPU a request at (c)'s 64 clients, this ≈ 0.07."""

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def exchange(self, request: bytes) -> int:
        """Send ``request``, read its whole answer: its status code. The connection is closed
        (and opened again by the next call) when the server says it closes it."""
        if self.writer is None:
            await self.open()
        self.writer.write(request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x answer: {head[:40]!r}")
        status = int(head[9:12])
        length, chunked, closing = None, False, head.startswith(b"HTTP/1.0")
        for line in head.split(b"\r\n")[1:-2]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                closing = value.strip().lower() == b"close"
        if chunked:
            await self._chunks()
        elif length is not None:
            await self.reader.readexactly(length)
        else:  # the body runs to the end of the connection
            await self.reader.read()
            closing = True
        if closing:
            self.close()
        return status

    async def _chunks(self) -> None:
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                while await self.reader.readuntil(b"\r\n") != b"\r\n":  # trailer fields
                    pass
                return
            await self.reader.readexactly(size + 2)


class ProtocolError(Exception):
    pass


def encode(call: Call, authority: str, headers: dict[str, str]) -> bytes:
    """``call`` as the bytes of an HTTP/1.1 request (a JSON body, if any, with its length)."""
    lines = [f"{call.method} {call.path} HTTP/1.1", f"Host: {authority}", "Accept: application/json"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    body = b""
    if call.json is not None:
        body = json.dumps(call.json).encode()
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    elif call.method in ("POST", "PUT", "PATCH"):
        lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError, ValueError, TimeoutError)


async def _client(connection: HttpConnection, requests: list[bytes], result: LoadResult, timeout: float) -> None:
    for request in requests:
        began = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                status = await connection.exchange(request)
        except ERRORS as exc:
            result.errors[type(exc).__name__] += 1
            connection.close()  # its state is unknown: the next request opens another
            continue
        result.statuses[status] += 1
        if status == result.expected:
            result.latencies.append(time.monotonic() - began)


async def _run(
    base_url: str, plans: list[list[Call]], expected: int, timeout: float, headers: dict[str, str]
) -> LoadResult:
    url = urlsplit(base_url)
    if url.scheme != "http" or not url.hostname:
        raise ValueError(f"an http:// URL is needed, got {base_url!r}")
    authority = url.netloc
    requests = [[encode(call, authority, headers) for call in calls] for calls in plans]
    connections = [HttpConnection(url.hostname, url.port or 80) for _ in plans]
    health = encode(Call("GET", "/health"), authority, headers)
    # open every client's connection first (and ask once), outside the measured window
    async with asyncio.timeout(timeout):
        await asyncio.gather(*(connection.exchange(health) for connection in connections))
    result = LoadResult(expected)
    result.started = time.monotonic()
    try:
        await asyncio.gather(*(_client(c, r, result, timeout) for c, r in zip(connections, requests, strict=True)))
    finally:
        result.finished = time.monotonic()
        for connection in connections:
            connection.close()
    return result


def run_load(
    base_url: str,
    plans: list[list[Call]],
    expected: int,
    timeout: float = 30.0,
    headers: dict[str, str] | None = None,
) -> LoadResult:
    """Run every client's plan concurrently (one client per plan), each request with
    ``headers`` (e.g. ``Authorization``); collect the answers."""
    return asyncio.run(_run(base_url, plans, expected, timeout, headers or {}))
