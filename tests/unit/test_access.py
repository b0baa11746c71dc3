"""API keys (format, checksum, keyed hash, scopes) and the per-key rate limiter."""

from __future__ import annotations

import string

import pytest

from gateway.access import keys
from gateway.access.limits import RateLimiter
from gateway.entrypoints import status_of
from gateway.exceptions import InsufficientScope, InvalidApiKey, RateLimited, Unauthenticated
from services.infra.settings import ConfigError, Settings


def test_a_new_key_reads_prefix_id_secret_checksum():
    key_id, secret, key = keys.new_key()
    prefix, found_id, found_secret, crc = key.split("_")
    assert (prefix, found_id, found_secret) == ("msk", key_id, secret)
    assert len(key_id) == 12 and set(key_id) <= set(string.ascii_lowercase + string.digits)
    assert len(secret) == 32 and len(crc) == 6
    assert len(secret) * 5.95 >= 128  # base62: about 5.95 bits a character
    assert keys.parse(key) == (key_id, secret)


def test_keys_are_not_repeated():
    made = {keys.new_key()[2] for _ in range(1000)}
    assert len(made) == 1000


def test_the_checksum_catches_any_one_character_typo():
    _, _, key = keys.new_key()
    alphabet = string.ascii_letters + string.digits
    for position in range(4, len(key)):
        if key[position] == "_":
            continue
        replacement = next(c for c in alphabet if c != key[position] and (position > 16 or c.islower() or c.isdigit()))
        typo = key[:position] + replacement + key[position + 1 :]
        assert keys.parse(typo) is None, (position, typo)


@pytest.mark.parametrize(
    "text",
    ["", "msk", "msk_abc", "pk_" + "a" * 50, " msk_" + "a" * 52, "msk_ABCDEFGHIJKL_" + "a" * 32 + "_aaaaaa"],
)
def test_anything_else_is_not_a_key(text):
    assert keys.parse(text) is None


def test_only_a_keyed_hash_is_kept_and_it_depends_on_the_secret():
    key_id, secret, key = keys.new_key()
    stored = keys.digest("server secret", key_id, secret)
    assert secret not in stored and key not in stored and len(stored) == 64
    assert keys.matches("server secret", keys.parse(key), stored)
    assert not keys.matches("another server secret", keys.parse(key), stored)
    _, other_secret, _ = keys.new_key()
    assert not keys.matches("server secret", keys.ParsedKey(key_id, other_secret), stored)


def test_scopes_are_checked_deduplicated_and_ordered():
    assert keys.check_scopes(["status:write", "students:read", "status:write", " "]) == [
        "students:read",
        "status:write",
    ]
    with pytest.raises(ValueError, match=r"unknown scope.*students:reed"):
        keys.check_scopes(["students:reed"])
    with pytest.raises(ValueError, match="at least one scope"):
        keys.check_scopes([])


def test_admin_allows_every_scope():
    assert all(keys.allows(frozenset({"admin"}), scope) for scope in keys.SCOPES)
    assert keys.allows(frozenset({"students:read"}), "students:read")
    assert not keys.allows(frozenset({"students:read"}), "students:write")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_bucket_allows_its_burst_then_refuses_until_a_token_returns():
    clock = Clock()
    limiter = RateLimiter(clock)
    verdicts = [limiter.take("k", rate=2.0, burst=3) for _ in range(4)]
    assert [v.allowed for v in verdicts] == [True, True, True, False]
    assert [v.remaining for v in verdicts] == [2, 1, 0, 0]
    assert verdicts[0].headers() == {"RateLimit-Limit": "3", "RateLimit-Remaining": "2", "RateLimit-Reset": "1"}
    refused = verdicts[-1]
    assert refused.retry_after == 1 and refused.headers()["Retry-After"] == "1" and refused.reset == 2

    clock.now += 0.5  # one token back at 2/s
    assert limiter.take("k", rate=2.0, burst=3).allowed
    assert not limiter.take("k", rate=2.0, burst=3).allowed
    clock.now += 60  # never more than the burst
    assert [limiter.take("k", rate=2.0, burst=3).allowed for _ in range(4)] == [True, True, True, False]


def test_each_key_has_its_own_bucket():
    limiter = RateLimiter(Clock())
    assert not [limiter.take("a", 1.0, 1).allowed for _ in range(2)][1]
    assert limiter.take("b", 1.0, 1).allowed


def test_a_slow_rate_says_how_long_to_wait():
    limiter = RateLimiter(Clock())
    limiter.take("k", rate=0.2, burst=1)
    refused = limiter.take("k", rate=0.2, burst=1)
    assert not refused.allowed and refused.retry_after == 5 and refused.reset == 5


@pytest.mark.parametrize(
    ("error", "status"), [(Unauthenticated, 401), (InvalidApiKey, 401), (InsufficientScope, 403), (RateLimited, 429)]
)
def test_the_door_errors_have_their_statuses(error, status):
    assert status_of(error) == status


def test_401s_say_how_to_authenticate():
    assert Unauthenticated("no key").headers["WWW-Authenticate"].startswith("Bearer")
    assert 'error="invalid_token"' in InvalidApiKey("bad key").headers["WWW-Authenticate"]


def test_a_secret_without_a_default_is_required_by_name():
    with pytest.raises(ConfigError, match="API_KEY_SECRET is not set"):
        Settings.from_config({"API_KEY_SECRET": " "}).require("api_key_secret")
    assert Settings.from_config({"API_KEY_SECRET": "s3cret"}).require("api_key_secret") == "s3cret"
