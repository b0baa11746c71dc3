"""Console sessions: a signed cookie naming a key, refused when forged, altered or expired; CSRF
tokens bound to one session."""

from __future__ import annotations

import pytest

from gateway.console import sessions

SECRET = "a secret"
KEY_ID = "abcdefgh1234"


def test_a_session_reads_back_until_it_expires():
    cookie, session = sessions.issue(SECRET, KEY_ID, lifetime=60, now=1_000)
    assert sessions.read(SECRET, cookie, now=1_059) == session
    assert session.key_id == KEY_ID and session.expires_at == 1_060
    assert sessions.read(SECRET, cookie, now=1_060) is None


def test_nonces_differ_between_sessions_of_one_key():
    first, second = (sessions.issue(SECRET, KEY_ID, 60)[1].nonce for _ in range(2))
    assert first != second


@pytest.mark.parametrize(
    "alter",
    [
        lambda c: c.replace(KEY_ID, "zzzzzzzz1234"),  # another key
        lambda c: c.replace(".2000.", ".9999."),  # a longer life
        lambda c: c[:-1] + ("A" if c[-1] != "A" else "B"),  # the signature
        lambda c: c.replace("v1.", "v2."),
        lambda c: c + ".extra",
        lambda c: c.split(".", 1)[1],
        lambda c: "",
        lambda c: "x" * 500,
    ],
)
def test_an_altered_cookie_is_no_session(alter):
    cookie, _ = sessions.issue(SECRET, KEY_ID, lifetime=1_000, now=1_000)
    assert sessions.read(SECRET, alter(cookie), now=1_500) is None


def test_another_secret_reads_no_session():
    cookie, _ = sessions.issue(SECRET, KEY_ID, lifetime=60)
    assert sessions.read("another secret", cookie) is None


def test_a_csrf_token_is_good_for_its_session_only():
    _, one = sessions.issue(SECRET, KEY_ID, 60)
    _, two = sessions.issue(SECRET, KEY_ID, 60)
    token = sessions.csrf_token(SECRET, one.nonce)
    assert sessions.csrf_ok(SECRET, one.nonce, token)
    assert not sessions.csrf_ok(SECRET, two.nonce, token)
    assert not sessions.csrf_ok("another secret", one.nonce, token)
    for sent in (None, "", token[:-1], "x" * 200):
        assert not sessions.csrf_ok(SECRET, one.nonce, sent)
    assert not sessions.csrf_ok(SECRET, None, token)


def test_a_login_nonce_must_look_like_one():
    assert sessions.login_nonce(sessions.new_nonce())
    for value in (None, "", "short", "a" * 23, "../../etc/passwd123456"):
        assert sessions.login_nonce(value) is None
