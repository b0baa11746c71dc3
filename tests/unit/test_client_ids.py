"""The pika client's own correlation ids: version 7 UUIDs, as the services make theirs."""

from __future__ import annotations

import time
import uuid

from clients.rpc import correlation_id_for, new_correlation_id


def test_a_new_correlation_id_is_a_time_ordered_uuid():
    before = time.time_ns() // 1_000_000
    made = [new_correlation_id() for _ in range(2_000)]
    after = time.time_ns() // 1_000_000

    parsed = [uuid.UUID(value) for value in made]
    assert all(str(u) == v and u.version == 7 and u.variant == uuid.RFC_4122 for u, v in zip(parsed, made, strict=True))
    assert len(set(made)) == len(made)
    assert all(before <= u.int >> 80 <= after for u in parsed), "the first 48 bits are the time in milliseconds"
    stamps = [u.int >> 80 for u in parsed]
    assert stamps == sorted(stamps)


def test_a_call_without_an_id_gets_a_new_one_and_a_given_one_is_kept():
    assert uuid.UUID(correlation_id_for(None, {})).version == 7
    assert correlation_id_for("web-8f3a", {}) == "web-8f3a"
    assert correlation_id_for(None, {"correlation_id": "ctx-1"}) == "ctx-1"
