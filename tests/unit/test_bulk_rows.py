"""Bulk uploads read row by row (gateway.bulk): JSON arrays and CSV files."""

from __future__ import annotations

import io
import json

import eventlet
import pytest

from gateway.bulk import BulkRow, RowError, read_rows
from gateway.exceptions import MalformedJson, PayloadTooLarge, UnsupportedMediaType
from gateway.routes.bulk_jobs import InFlight
from services.exceptions import JobUploadSuperseded, ValidationFailed
from services.infra import correlation
from services.infra.pagination import MAX_ID

JSON, CSV = "application/json", "text/csv"
NO_ID = {key: ["Provide student_id or email."] for key in ("student_id", "email")}
BOTH = {key: ["Provide only one of student_id and email."] for key in ("student_id", "email")}
BAD_STATUS = {"status": ["Must be one of: enrolled, active, suspended, completed, withdrawn."]}
NOT_INTEGER = {"student_id": ["Not a valid integer."]}
BAD_ID = {"student_id": [f"Must be an integer from 1 to {MAX_ID}."]}
BAD_EMAIL = {"email": ["Not a valid email address."]}
LONG_REASON = {"reason": ["Longer than maximum length 1000."]}
OK = BulkRow(1, 1, None, "active", None)


class Trickle:
    """A stream that hands out at most ``size`` bytes per read."""

    def __init__(self, data: bytes, size: int = 7):
        self.data, self.size, self.pos = data, size, 0

    def read(self, n: int) -> bytes:
        chunk = self.data[self.pos : self.pos + min(n, self.size)]
        self.pos += len(chunk)
        return chunk


@pytest.fixture(params=["whole", "7-byte reads", "1-byte chunks"])
def read(request):
    """Read a body (str or bytes) to the end: every row, in one go or in small pieces."""

    def read(body, mimetype=JSON, *, max_rows=100, max_bytes=100_000):
        data = body.encode() if isinstance(body, str) else body
        stream = Trickle(data) if request.param == "7-byte reads" else io.BytesIO(data)
        size = 1 if request.param == "1-byte chunks" else 65536
        return list(read_rows(stream, mimetype, max_rows=max_rows, max_bytes=max_bytes, chunk_size=size))

    return read


def read_until_error(body, mimetype=JSON, **limits) -> tuple[list, Exception]:
    items = []
    with pytest.raises((MalformedJson, ValidationFailed, PayloadTooLarge)) as info:
        for item in read_rows(Trickle(body.encode() if isinstance(body, str) else body), mimetype, **limits):
            items.append(item)
    return items, info.value


def invalid(row: int, details: dict) -> RowError:
    return RowError(row, "VALIDATION_FAILED", f"Row {row} is invalid.", details)


# --- JSON -------------------------------------------------------------------


def test_json_rows_by_id_and_by_email(read):
    body = json.dumps(
        [
            {"student_id": 7, "status": "active", "reason": "term start"},
            {"email": " Ana.Lima@Example.PT ", "status": "suspended", "reason": None},
            {"student_id": MAX_ID, "status": "withdrawn", "reason": "r" * 1000},
        ]
    )
    assert read(body) == [
        BulkRow(1, 7, None, "active", "term start"),
        BulkRow(2, None, "ana.lima@example.pt", "suspended", None),
        BulkRow(3, MAX_ID, None, "withdrawn", "r" * 1000),
    ]


@pytest.mark.parametrize(
    ("element", "details"),
    [
        ({"status": "active"}, NO_ID),
        ({"student_id": None, "email": None, "status": "active"}, NO_ID),
        ({"student_id": 1, "email": "a@b.pt", "status": "active"}, BOTH),
        ({"student_id": True, "status": "active"}, NOT_INTEGER),
        ({"student_id": 1.0, "status": "active"}, NOT_INTEGER),
        ({"student_id": "7", "status": "active"}, NOT_INTEGER),
        ({"student_id": 0, "status": "active"}, BAD_ID),
        ({"student_id": MAX_ID + 1, "status": "active"}, BAD_ID),
        ({"email": "not-an-address", "status": "active"}, BAD_EMAIL),
        ({"email": 5, "status": "active"}, BAD_EMAIL),
        ({"student_id": 1, "status": "retired"}, BAD_STATUS),
        ({"student_id": 1}, {"status": ["Missing data for required field."]}),
        ({"student_id": 1, "status": None}, {"status": ["Field may not be null."]}),
        ({"student_id": 1, "status": 3}, {"status": ["Not a valid string."]}),
        ({"student_id": 1, "status": "active", "reason": "r" * 1001}, LONG_REASON),
        ({"student_id": 1, "status": "active", "reason": 5}, {"reason": ["Not a valid string."]}),
        ({"student_id": 1, "status": "active", "actor": "me"}, {"actor": ["Unknown field."]}),
        ({"student_id": "x", "status": "x"}, {**NOT_INTEGER, **BAD_STATUS}),
        ("text", {"_schema": ["Expected an object."]}),
        ([{"student_id": 1, "status": "active"}], {"_schema": ["Expected an object."]}),
        (None, {"_schema": ["Expected an object."]}),
    ],
)
def test_json_invalid_row_between_valid_ones(read, element, details):
    valid = {"student_id": 1, "status": "active"}
    assert read(json.dumps([valid, element, valid])) == [OK, invalid(2, details), BulkRow(3, 1, None, "active", None)]


# more digits than Python converts to an int (sys.get_int_max_str_digits(), 4,300 by default)
HUGE = "9" * 5000


@pytest.mark.parametrize(
    ("element", "details"),
    [
        (f'{{"student_id": {HUGE}, "status": "active"}}', BAD_ID),
        (f'{{"student_id": -{HUGE}, "status": "active"}}', BAD_ID),
        (f'{{"student_id": 1, "status": {HUGE}}}', {"status": ["Not a valid string."]}),
        (f'{{"student_id": 1, "status": "active", "reason": {HUGE}}}', {"reason": ["Not a valid string."]}),
        (f'{{"email": {HUGE}, "status": "active"}}', BAD_EMAIL),
        (f'{{"student_id": 1, "status": "active", "n": [{HUGE}]}}', {"n": ["Unknown field."]}),
        (HUGE, {"_schema": ["Expected an object."]}),
    ],
)
def test_json_integer_with_too_many_digits_is_a_row_error(read, element, details):
    valid = '{"student_id": 1, "status": "active"}'
    body = f"[{valid}, {element}, {valid}]"

    assert read(body) == [OK, invalid(2, details), BulkRow(3, 1, None, "active", None)]


def test_json_integer_with_too_many_digits_then_a_fraction_is_one_number(read):
    assert read(f"[{HUGE}.5]") == [invalid(1, {"_schema": ["Expected an object."]})]


def test_json_whitespace_bom_and_empty_array(read):
    assert read(" \n[ \r\n\t]\n ") == []
    assert read('\ufeff[\n  {"student_id" : 1 ,\n "status":"active"}\n\n]\n') == [OK]


def test_json_numbers_cut_by_chunk_edges_are_read_whole():
    body = b'[12345678, -0.25e+3, {"student_id": 1234567, "status": "active"}, 1.5]'
    items = list(read_rows(Trickle(body, 1), JSON, max_rows=10, max_bytes=1000, chunk_size=1))
    assert [item.row for item in items] == [1, 2, 3, 4]
    assert items[2] == BulkRow(3, 1234567, None, "active", None)


@pytest.mark.parametrize(
    ("body", "rows_before", "reason"),
    [
        ('[{"student_id": 1, "status": "active"}, {"student_id": 2 "status": "x"}]', 1, "Expecting ',' delimiter"),
        ('[{"student_id": 1, "status": "active"}, ]', 1, "Expecting value"),
        ('[{"student_id": 1, "status": "active"} {"student_id": 2}]', 1, "Expecting ',' or ']' after a row."),
        ('[{"student_id": 1, "status": "active"}', 1, "The array is not closed."),
        ('[{"student_id": 1, "status": "active"}] []', 1, "Extra data after the array."),
        ('{"student_id": 1, "status": "active"}', 0, "The body is not a JSON array."),
        (" \n ", 0, "The body is empty."),
        (b'[{"student_id": 1, "status": "active"}, {"email": "\xff"}]', 1, "Invalid UTF-8 at byte 51."),
    ],
)
def test_malformed_json_fails_the_upload_after_the_rows_before_it(body, rows_before, reason):
    items, error = read_until_error(body, max_rows=10, max_bytes=1000)
    assert items == [OK] * rows_before
    assert type(error) is MalformedJson
    assert (error.message, error.details) == ("The body is not valid JSON.", {"reason": reason, "row": rows_before + 1})


# --- CSV --------------------------------------------------------------------


def test_csv_rows_by_id_and_by_email(read):
    body = "student_id,email,status,reason\n7,,active,term start\n, Ana@Example.PT ,suspended,\n"
    assert read(body, CSV) == [
        BulkRow(1, 7, None, "active", "term start"),
        BulkRow(2, None, "ana@example.pt", "suspended", None),
    ]


def test_csv_bom_reordered_columns_quoted_newline_and_blank_lines(read):
    body = '\ufeff\r\nreason,Status,email\r\n\r\n"two\r\nlines, quoted",active,a@b.pt\r\n  \r\n,completed,c@d.pt\r\n\n'
    assert read(body, CSV) == [
        BulkRow(1, None, "a@b.pt", "active", "two\r\nlines, quoted"),
        BulkRow(2, None, "c@d.pt", "completed", None),
    ]


@pytest.mark.parametrize(
    ("line", "details"),
    [
        (",,active", NO_ID),
        ("7,a@b.pt,active", BOTH),
        ("x7,,active", NOT_INTEGER),
        ("-7,,active", NOT_INTEGER),
        ("٣,,active", NOT_INTEGER),  # a digit, but not an ASCII one
        ("0,,active", BAD_ID),
        (f"{MAX_ID + 1},,active", BAD_ID),
        ("9" * 30 + ",,active", BAD_ID),
        ("0" * 30 + "1,,active,", None),  # leading zeros are fine
        ("0" * 5000 + "1,,active,", None),  # more digits than Python's int() takes, still a small number
        ("0" * 4999 + "1" * 11 + ",,active", BAD_ID),  # and a large one
        (",a@,active", BAD_EMAIL),
        ("7,,Active", BAD_STATUS),
        ("7,,", {"status": ["Missing data for required field."]}),
        ("7", {"status": ["Missing data for required field."]}),
        (f"7,,active,{'r' * 1001}", LONG_REASON),
        ("7,,active,why,extra", {"_schema": ["The row has 5 cells, the header 4."]}),
    ],
)
def test_csv_invalid_row_between_valid_ones(read, line, details):
    body = f"student_id,email,status,reason\n1,,active,\n{line}\n1,,active\n"
    second = BulkRow(2, 1, None, "active", None) if details is None else invalid(2, details)
    assert read(body, CSV) == [OK, second, BulkRow(3, 1, None, "active", None)]


@pytest.mark.parametrize(
    ("body", "reasons"),
    [
        ("student_id,reason\n1,x\n", ["Missing column: status."]),
        ("status,reason\nactive,x\n", ["Missing column: student_id or email."]),
        ("student_id,status,actor\n", ["Unknown column: 'actor'."]),
        ("student_id,status,\n", ["Column 3 has no name."]),
        ("email,status,Email\n", ["Duplicated column: email."]),
        ("", ["The body has no header line."]),
        ("\ufeff\n \n", ["The body has no header line."]),
    ],
)
def test_bad_csv_header_fails_the_upload(body, reasons):
    items, error = read_until_error(body, CSV, max_rows=10, max_bytes=1000)
    assert items == []
    assert (type(error), error.message, error.details) == (ValidationFailed, "Invalid CSV header.", {"header": reasons})


def test_csv_not_utf8_fails_after_the_rows_before_it():
    items, error = read_until_error(b"student_id,status\n1,active\n2,\xe9\n", CSV, max_rows=10, max_bytes=1000)
    assert items == [OK]
    assert (type(error), error.message) == (ValidationFailed, "The CSV is not valid UTF-8.")
    assert error.details == {"body": ["Invalid UTF-8 at byte 29."]}


def test_csv_broken_quoting_fails_the_upload():
    items, error = read_until_error('student_id,status\n1,active\n"2"x,active\n', CSV, max_rows=10, max_bytes=1000)
    assert items == [OK]
    assert (error.message, error.details) == ("The CSV is malformed.", {"body": ["Row 2: ',' expected after '\"'."]})


# --- both -------------------------------------------------------------------


def test_unsupported_media_type_fails_before_reading():
    stream = Trickle(b"student_id,status\n")
    with pytest.raises(UnsupportedMediaType) as info:
        read_rows(stream, "text/plain", max_rows=10, max_bytes=1000)
    assert info.value.message == "Send the rows as application/json or text/csv."
    assert info.value.details == {"content_type": "text/plain"}
    assert stream.pos == 0


@pytest.mark.parametrize(
    ("body", "mimetype"),
    [
        ('[{"student_id": 1, "status": "active"}, 2, 3]', JSON),
        ("student_id,status\n1,active\n\nx,active\ny,active\n", CSV),
    ],
)
def test_more_rows_than_allowed(read, body, mimetype):
    assert len(read(body, mimetype, max_rows=3)) == 3
    items, error = read_until_error(body, mimetype, max_rows=2, max_bytes=1000)
    assert items == [OK, invalid(2, {"_schema": ["Expected an object."]} if mimetype == JSON else NOT_INTEGER)]
    assert (type(error), error.message, error.details) == (PayloadTooLarge, "More than 2 rows.", {"max_rows": 2})


@pytest.mark.parametrize(
    ("body", "mimetype"), [('[{"student_id": 1, "status": "active"}, 2]', JSON), ("student_id,status\n1,active\n", CSV)]
)
def test_more_bytes_than_allowed(read, body, mimetype):
    size = len(body)
    assert read(body, mimetype, max_bytes=size)[0] == OK
    stream = io.BytesIO(body.encode())
    with pytest.raises(PayloadTooLarge) as info:
        list(read_rows(stream, mimetype, max_rows=10, max_bytes=size - 5, chunk_size=1000))
    assert (info.value.message, info.value.details) == (f"The body exceeds {size - 5} bytes.", {"max_bytes": size - 5})
    assert stream.tell() == size - 4  # never more than max_bytes + 1


@pytest.mark.parametrize("mimetype", [JSON, CSV])
def test_rows_come_out_before_the_body_is_read(mimetype):
    rows = ['{"student_id": 1, "status": "active"}'] * 10_000
    body = ("[" + ",".join(rows) + "]" if mimetype == JSON else "student_id,status\n" + "1,active\n" * 10_000).encode()
    stream = io.BytesIO(body)
    items = read_rows(stream, mimetype, max_rows=10_000, max_bytes=len(body), chunk_size=64)
    assert next(items) == OK
    assert stream.tell() <= 128
    assert sum(1 for _ in items) == 9_999
    assert stream.tell() == len(body)


def test_a_chunk_in_flight_keeps_the_callers_context_and_hands_back_its_error(capfd):
    """The gateway stores a chunk in a greenthread while it reads the next one."""
    seen = []

    def store(rows: list) -> int:
        seen.append(correlation.current())
        eventlet.sleep(0.01)  # the caller goes on meanwhile
        if not rows:
            raise JobUploadSuperseded("replaced", {"job_id": "j"})
        return len(rows)

    with correlation.working_on("upload-1"):
        first = InFlight(store, [1, 2])
        second = InFlight(store, [])
    assert seen == ["upload-1", "upload-1"]  # both started at once, under the caller's id
    assert first.result() == 2
    with pytest.raises(JobUploadSuperseded):
        second.result()
    second.wait()  # waiting again is harmless
    assert "Traceback" not in capfd.readouterr().err  # the error went to the caller, not to the hub
