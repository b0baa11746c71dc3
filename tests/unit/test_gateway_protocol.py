"""The gateway reads a request's head itself (``gateway.protocol``): what it makes of the header
fields is what ``http.client.parse_headers`` made of them, and what RFC 9112 forbids is refused."""

from __future__ import annotations

import http.client
import io

import pytest

from gateway.protocol import MAX_FIELDS, BadHead, RequestHeaders, TooManyFields, _version_number, read_fields

HEADS = [
    pytest.param(
        b"Host: 127.0.0.1:8000\r\nAccept: */*\r\nContent-Type: application/json; charset=utf-8\r\n"
        b"Content-Length: 41\r\nAuthorization: Bearer mk_abc.def\r\nIdempotency-Key: k-1\r\n\r\n",
        id="a client's request",
    ),
    pytest.param(b"host: x\r\nX-Actor:   padded  \t\r\nx-actor: second\r\n\r\n", id="any case, padding, twice"),
    pytest.param(b"Host: x\nConnection: close\n\n", id="bare LF"),
    pytest.param(b"Host: x\r\nContent-Type: text\r\nEmpty:\r\n\r\n", id="no subtype, empty value"),
    pytest.param(b"Host: x\r\nX-Note: caf\xe9 \xff\r\n\r\n", id="latin-1 bytes"),
    pytest.param(b"Host: x\r\nContent-Type: Application/JSON\r\n", id="head ends with the stream"),
    pytest.param(b"\r\n", id="no fields"),
]


def parsed(head: bytes) -> RequestHeaders:
    return RequestHeaders(read_fields(io.BytesIO(head).readline))


@pytest.mark.parametrize("head", HEADS)
def test_the_fields_read_as_the_standard_library_reads_them(head: bytes) -> None:
    ours, theirs = parsed(head), http.client.parse_headers(io.BytesIO(head))
    names = {name.lower() for name in theirs} | {"content-length", "transfer-encoding", "expect", "absent"}
    for name in names:
        expected = theirs.get(name)
        assert ours.get(name) == (expected.strip(" \t") if expected is not None else None), name
        assert ours.get(name.upper(), "default") == (expected.strip(" \t") if expected is not None else "default")
        assert (name in ours) == (name in theirs)
    assert ours._headers == [(k, v.strip(" \t\r\n")) for k, v in theirs._headers]  # eventlet's environ
    assert ours.get_content_type() == theirs.get_content_type()
    assert len(ours) == len(theirs) and ours.items() == ours._headers


def test_a_folded_line_continues_its_field_after_a_space() -> None:
    headers = parsed(b"Host: x\r\nX-Actor: first\r\n  second part \r\n\tthird\r\nAccept: */*\r\n\r\n")
    assert headers.get("x-actor") == "first second part third"
    assert headers.get("accept") == "*/*" and len(headers) == 3


@pytest.mark.parametrize(
    "head",
    [
        pytest.param(b"Bad Name: x\r\n\r\n", id="space in the name"),
        pytest.param(b"Host : x\r\n\r\n", id="space before the colon"),
        pytest.param(b"NoColonHere\r\n\r\n", id="no colon"),
        pytest.param(b": empty name\r\n\r\n", id="empty name"),
        pytest.param(b"X(y): z\r\n\r\n", id="separator in the name"),
        pytest.param(b" continued: x\r\nHost: x\r\n\r\n", id="continuation before any field"),
    ],
)
def test_what_rfc_9112_forbids_is_a_bad_head(head: bytes) -> None:
    with pytest.raises(BadHead):
        parsed(head)


def test_more_than_max_fields_is_too_many() -> None:
    fields = b"".join(b"X-F%d: v\r\n" % i for i in range(MAX_FIELDS))
    assert len(parsed(fields + b"\r\n")) == MAX_FIELDS
    with pytest.raises(TooManyFields):
        parsed(fields + b"X-One-More: v\r\n\r\n")


def test_content_type_as_the_email_package_reads_it() -> None:
    assert parsed(b"Content-Type: Application/JSON ; charset=x\r\n\r\n").get_content_type() == "application/json"
    assert parsed(b"Content-Type: a/b/c\r\n\r\n").get_content_type() == "text/plain"
    assert parsed(b"\r\n").get_content_type() == "text/plain"


@pytest.mark.parametrize(
    ("version", "number"),
    [
        ("HTTP/1.1", (1, 1)),
        ("HTTP/1.0", (1, 0)),
        ("HTTP/01.01", (1, 1)),
        ("HTTP/2.0", (2, 0)),
        ("HTTP/1", None),
        ("HTTP/1.1.1", None),
        ("HTTP/1.\u00b2", None),  # a digit to str.isdigit, not to int()
        ("HTTP/12345678901.1", None),
        ("http/1.1", None),
        ("HTTP/1.x", None),
    ],
)
def test_version_numbers(version: str, number: tuple[int, int] | None) -> None:
    assert _version_number(version) == number


def test_content_length_twice_must_agree() -> None:
    assert parsed(b"Content-Length: 2\r\ncontent-length: 2\r\n\r\n").get("Content-Length") == "2"
    with pytest.raises(BadHead):
        parsed(b"Content-Length: 2\r\ncontent-LENGTH: 20\r\n\r\n")
