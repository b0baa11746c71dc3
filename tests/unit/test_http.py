"""Reading requests in the gateway (gateway.http), on werkzeug-built requests."""

from __future__ import annotations

import io

import pytest
from werkzeug.test import EnvironBuilder
from werkzeug.wrappers import Request

from gateway.access.gate import Principal
from gateway.exceptions import MalformedJson, PayloadTooLarge, UnsupportedMediaType
from gateway.http import Actor, actor, idempotency_key, if_match_version, read_json
from services.exceptions import ValidationFailed

MAX = 64


def make_request(body: bytes | None = None, content_type: str | None = "application/json", **headers) -> Request:
    builder = EnvironBuilder(method="POST", data=body, content_type=content_type, headers=headers)
    return Request(builder.get_environ())


def streamed_request(body: bytes, content_type: str = "application/json") -> Request:
    """A chunked request without Content-Length, from a server that terminates the stream."""
    builder = EnvironBuilder(method="POST", input_stream=io.BytesIO(body), content_type=content_type)
    environ = builder.get_environ()
    environ.pop("CONTENT_LENGTH", None)
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input_terminated"] = True
    return Request(environ)


# --- read_json -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "content_type", "parsed"),
    [
        (b'{"name": "Ana"}', "application/json", {"name": "Ana"}),
        (b'{"name": "Ana"}', "application/json; charset=utf-8", {"name": "Ana"}),
        (b'{"name": "J\xc3\xbalia"}', "application/json", {"name": "Júlia"}),
        (b"[1, 2]", "application/json", [1, 2]),
        (b'{"n": "' + b"x" * (MAX - 9) + b'"}', "application/json", {"n": "x" * (MAX - 9)}),  # exactly MAX
    ],
)
def test_valid_json_is_parsed(body, content_type, parsed):
    assert read_json(make_request(body, content_type), MAX) == parsed


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_wrong_content_type_is_415(content_type):
    with pytest.raises(UnsupportedMediaType) as info:
        read_json(make_request(b'{"a": 1}', content_type), MAX)
    assert info.value.code == "UNSUPPORTED_MEDIA_TYPE"
    assert info.value.details == {"content_type": content_type or ""}


def test_too_large_by_content_length_is_413():
    with pytest.raises(PayloadTooLarge) as info:
        read_json(make_request(b'{"n": "' + b"x" * MAX + b'"}'), MAX)
    assert info.value.details == {"max_bytes": MAX}


def test_too_large_by_content_length_is_413_before_the_type_check():
    with pytest.raises(PayloadTooLarge):
        read_json(make_request(b"x" * (MAX + 1), "text/plain"), MAX)


def test_too_large_streamed_is_413():
    request = streamed_request(b'{"n": "' + b"x" * (10 * MAX) + b'"}')
    assert request.content_length is None

    with pytest.raises(PayloadTooLarge) as info:
        read_json(request, MAX)
    assert info.value.details == {"max_bytes": MAX}


def test_streamed_within_the_limit_is_parsed():
    assert read_json(streamed_request(b'{"a": 1}'), MAX) == {"a": 1}


@pytest.mark.parametrize(
    "body",
    [
        b'{"name": ',
        b"{'name': 'single quotes'}",
        b"",
        b"   ",
        b"\xff\xfe\xfa",
        b'{"a": 1} trailing',
        b"[" * 50,
        b"[" * 4000,  # nesting deeper than the recursion limit, still under the size limit
    ],
    ids=["truncated", "single-quotes", "empty", "blank", "not-utf8", "trailing", "unclosed", "deeply-nested"],
)
def test_malformed_json_is_400(body):
    with pytest.raises(MalformedJson) as info:
        read_json(make_request(body), max_bytes=8192)
    assert info.value.code == "MALFORMED_JSON"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [(None, None), (b"", "application/json"), (b"  ", "application/json")],
)
def test_optional_body_may_be_absent(body, content_type):
    assert read_json(make_request(body, content_type), MAX, required=False) == {}


# --- If-Match ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "version"),
    [(None, None), ("3", 3), ('"3"', 3), ('W/"3"', 3), (' "12" ', 12), ("0", 0), ('"3.2"', 3), ('W/"3.2"', 3)],
)
def test_if_match_version(header, version):
    headers = {} if header is None else {"If-Match": header}

    assert if_match_version(make_request(**headers)) == version


@pytest.mark.parametrize(
    "header", ["", "abc", '""', "W/", 'W/"x"', "-1", "3.0", "1e3", "0x10", "3,4", "²", '"3."', '".2"', '"3.2.1"']
)
def test_if_match_garbage_is_rejected(header):
    with pytest.raises(ValidationFailed) as info:
        if_match_version(make_request(**{"If-Match": header}))
    assert info.value.details == {"If-Match": ["Must be a version number."]}


# --- Idempotency-Key -------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "key"),
    [(None, None), ("abc", "abc"), ("  abc  ", "abc"), ("k" * 200, "k" * 200)],
)
def test_idempotency_key(header, key):
    headers = {} if header is None else {"Idempotency-Key": header}

    assert idempotency_key(make_request(**headers)) == key


@pytest.mark.parametrize("header", ["", "   ", "k" * 201])
def test_idempotency_key_rejected(header):
    with pytest.raises(ValidationFailed) as info:
        idempotency_key(make_request(**{"Idempotency-Key": header}))
    assert info.value.details == {"Idempotency-Key": ["Must be 1 to 200 characters."]}


@pytest.mark.parametrize("header", ["k\x01y", "clé", "a\tb"])
def test_idempotency_key_is_visible_ascii(header):
    with pytest.raises(ValidationFailed) as info:
        idempotency_key(make_request(**{"Idempotency-Key": header}))
    assert info.value.details == {"Idempotency-Key": ["Must be visible ASCII characters and spaces."]}


@pytest.mark.parametrize("header", ['"3', '3"', "W/3", '""3""', "1" * 11])
def test_if_match_is_one_whole_version(header):
    with pytest.raises(ValidationFailed):
        if_match_version(make_request(**{"If-Match": header}))


# --- X-Actor ---------------------------------------------------------------------


def keyed(request, name: str = "secretaria web app"):
    request.principal = Principal("k3y1d0000000", name, frozenset({"status:write"}))
    return request


@pytest.mark.parametrize(
    ("header", "behalf"),
    [(None, None), ("", None), ("  ", None), (" registrar ", "registrar"), ("a" * 200, "a" * 200)],
)
def test_the_actor_is_the_keys_name_and_x_actor_only_on_behalf_of(header, behalf):
    headers = {} if header is None else {"X-Actor": header}

    assert actor(keyed(make_request(**headers))) == Actor("secretaria web app", behalf)


@pytest.mark.parametrize(
    ("header", "message"),
    [("a" * 201, "Longer than maximum length 200."), ("ana\x86", "Must be visible ASCII characters and spaces.")],
)
def test_actor_rejected(header, message):
    with pytest.raises(ValidationFailed) as info:
        actor(keyed(make_request(**{"X-Actor": header})))
    assert info.value.details == {"X-Actor": [message]}
