"""Per-key rate limits: a token bucket per key, in this gateway instance's memory.

Each key may make ``rate`` requests a second on average and ``burst`` at once. A
bulk upload is one request, so it costs one token however many rows it carries.

The buckets are per gateway instance, not shared: checking one costs no round trip
(a shared bucket would put Redis or the database on every request's path and make
it a single point of failure). With N instances behind a load balancer a key can
make up to N times its rate; size the limits for that, or pin keys to instances.
"""

from __future__ import annotations

import math
import time
from typing import NamedTuple


class Verdict(NamedTuple):
    allowed: bool
    limit: int  # RateLimit-Limit: the burst
    remaining: int  # RateLimit-Remaining: requests that may be made now
    reset: int  # RateLimit-Reset: seconds until the bucket is full again
    retry_after: int  # seconds until the next request may be made (when refused)

    def headers(self) -> dict[str, str]:
        headers = {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after)
        return headers


class RateLimiter:
    """``take(key_id, rate, burst)`` spends one token of the key's bucket, if it has one."""

    MAX_KEYS = 100_000

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.buckets: dict[str, tuple[float, float]] = {}  # key id -> (tokens, when)

    def take(self, key_id: str, rate: float, burst: int) -> Verdict:
        now = self.clock()
        tokens, then = self.buckets.get(key_id, (float(burst), now))
        tokens = min(float(burst), tokens + (now - then) * rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        if len(self.buckets) >= self.MAX_KEYS and key_id not in self.buckets:
            self.buckets.clear()  # only revoked or idle keys' buckets are lost: they refill anyway
        self.buckets[key_id] = (tokens, now)
        return Verdict(
            allowed=allowed,
            limit=burst,
            remaining=int(tokens),
            reset=math.ceil((burst - tokens) / rate),
            retry_after=0 if allowed else max(1, math.ceil((1.0 - tokens) / rate)),
        )
