"""A closed-loop HTTP load generator: one asyncio task per client, each sending
its own list of requests one after another over a kept-alive connection
(aiohttp). One process; at the rates the gateway reaches it uses a small
share of a core (the runner reports its CPU next to the servers')."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp

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


async def _client(session: aiohttp.ClientSession, base_url: str, calls: list[Call], result: LoadResult) -> None:
    for call in calls:
        began = time.monotonic()
        try:
            async with session.request(call.method, base_url + call.path, json=call.json) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.errors[type(exc).__name__] += 1
            continue
        result.statuses[status] += 1
        if status == result.expected:
            result.latencies.append(time.monotonic() - began)


async def _warm_up(session: aiohttp.ClientSession, base_url: str) -> None:
    async with session.get(base_url + "/health") as response:
        await response.read()


async def _run(
    base_url: str, plans: list[list[Call]], expected: int, timeout: float, headers: dict[str, str]
) -> LoadResult:
    result = LoadResult(expected)
    connector = aiohttp.TCPConnector(limit=len(plans), limit_per_host=len(plans), ttl_dns_cache=None)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout, headers=headers) as session:
        # open every client's connection first, outside the measured window
        await asyncio.gather(*(_warm_up(session, base_url) for _ in plans))
        result.started = time.monotonic()
        await asyncio.gather(*(_client(session, base_url, calls, result) for calls in plans))
        result.finished = time.monotonic()
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
