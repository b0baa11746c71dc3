"""A delivery's body as the guard sees it: py-amqp decodes the body of a message that names a
content encoding (nameko's and kombu's publishers all do) to ``str``; sizes and dead letters go
by the bytes that travelled."""

from __future__ import annotations

import base64

from kombu.message import Message

from services.infra.inbound import parked_body, raw_body, refusal

TEXT = '{"student_id": 1, "reason": "Ação"'  # not JSON: the closing brace is missing


def delivered(body: bytes | str, content_encoding: str | None = "utf-8") -> Message:
    return Message(body=body, content_type="application/json", content_encoding=content_encoding)


def test_a_decoded_body_is_parked_as_the_bytes_that_travelled():
    raw = TEXT.encode()
    for message in (delivered(TEXT), delivered(raw), delivered(raw, content_encoding=None)):
        assert raw_body(message) == raw
        letter = parked_body(message, limit=10)
        assert base64.b64decode(letter["raw_body"]) == raw[:10]
        assert letter["raw_bytes"] == len(raw) and letter["truncated"]


def test_the_size_limit_counts_bytes_not_characters():
    raw = TEXT.encode()
    assert len(TEXT) < len(raw)
    for message in (delivered(TEXT), delivered(raw)):
        assert refusal(message, limit=len(raw) - 1, rpc=False)[1].startswith(f"Message of {len(raw)} bytes")
        assert refusal(message, limit=len(raw), rpc=False)[1].startswith("Body is not valid JSON")


def test_a_body_whose_codec_will_not_encode_it_back_is_still_parked():
    message = delivered("\udcff not json", content_encoding="ascii")  # as no ascii decode could give
    letter = parked_body(message, limit=100)
    assert base64.b64decode(letter["raw_body"]) == "\udcff not json".encode("utf-8", "surrogatepass")
