"""Input schemas (via services.schemas.load) and keyset cursors."""

from __future__ import annotations

import base64
import re
import unicodedata
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.exceptions import ValidationFailed
from services.fields import CURSOR, EMAIL, LANGUAGE, LINE
from services.infra.pagination import DEFAULT_LIMIT, MAX_ID, decode_cursor, encode_cursor, page
from services.schemas import (
    ACTOR,
    CertificateIssuedSchema,
    CompletionBodySchema,
    HistoryEntrySchema,
    HistoryQuerySchema,
    JobOptionsSchema,
    JobRowSchema,
    JobSchema,
    ListStudentsSchema,
    StatusChangeBatchSchema,
    StatusChangeBodySchema,
    StatusChangeSchema,
    StatusRequestSchema,
    StudentCreateSchema,
    StudentSchema,
    StudentUpdateSchema,
    load,
    positive_id,
    status_change_requests,
)

VALID = {"name": "Ana Lima", "email": "ana@example.com", "course": "Physics"}
# well-formed (labels of 60 characters) but longer than the 320 allowed
LONG_EMAIL = "a@" + ".".join(["b" * 60] * 6) + ".com"


def failed_fields(schema, data) -> dict:
    with pytest.raises(ValidationFailed) as info:
        load(schema, data)
    assert info.value.code == "VALIDATION_ERROR"
    return info.value.details


# --- StudentCreateSchema ---------------------------------------------------


def test_create_valid():
    assert load(StudentCreateSchema(), VALID) == VALID


def test_create_strips_and_lowercases_email():
    data = {"name": "  Ana Lima ", "email": " Ana.Lima@Example.COM ", "course": "\tPhysics\n"}

    assert load(StudentCreateSchema(), data) == {
        "name": "Ana Lima",
        "email": "ana.lima@example.com",
        "course": "Physics",
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"name": None}, "name"),
        ({"name": ""}, "name"),
        ({"name": "   "}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": 42}, "name"),
        ({"course": ""}, "course"),
        ({"course": "x" * 201}, "course"),
        ({"email": "not-an-email"}, "email"),
        ({"email": "ana@"}, "email"),
        ({"email": ""}, "email"),
        ({"email": LONG_EMAIL}, "email"),
        ({"role": "admin"}, "role"),
    ],
)
def test_create_rejects_bad_field(changes, field):
    details = failed_fields(StudentCreateSchema(), {**VALID, **changes})

    assert set(details) == {field}
    assert details[field] and all(isinstance(m, str) for m in details[field])


def test_create_accepts_names_and_emails_at_their_limits():
    email = "a@" + ".".join(["b" * 60] * 5) + ".com"
    data = {"name": "n" * 200, "email": email, "course": "c" * 200}

    assert load(StudentCreateSchema(), data) == data


def test_create_email_too_long_is_a_length_error():
    details = failed_fields(StudentCreateSchema(), {**VALID, "email": LONG_EMAIL})

    assert details == {"email": ["Longer than maximum length 320."]}


@pytest.mark.parametrize("missing", ["name", "email", "course"])
def test_create_requires_each_field(missing):
    data = {k: v for k, v in VALID.items() if k != missing}

    assert failed_fields(StudentCreateSchema(), data) == {missing: ["Missing data for required field."]}


def test_create_reports_every_bad_field_at_once():
    details = failed_fields(StudentCreateSchema(), {"email": "nope", "extra": 1})

    assert set(details) == {"name", "email", "course", "extra"}


@pytest.mark.parametrize("data", [None, [], "text", 42])
def test_load_rejects_non_objects(data):
    assert failed_fields(StudentCreateSchema(), data) == {"_schema": ["Expected an object."]}


# --- a student's language ----------------------------------------------------


@pytest.mark.parametrize(
    ("language", "loaded"),
    [
        ("pt_BR", "pt_BR"),
        ("pt-BR", "pt_BR"),
        ("pt_br", "pt_BR"),
        ("pt", "pt_BR"),
        ("PT", "pt_BR"),
        ("en", "en"),
        ("en-US", "en"),
        (None, None),
    ],
)
def test_a_language_is_stored_as_one_of_the_languages(language, loaded):
    assert load(StudentCreateSchema(), {**VALID, "language": language}) == {**VALID, "language": loaded}
    assert load(StudentUpdateSchema(), {"language": language}) == {"language": loaded}
    assert re.fullmatch(LANGUAGE, language or "en"), "the published pattern admits it"


def test_without_a_language_none_is_loaded():
    assert "language" not in load(StudentCreateSchema(), VALID)


@pytest.mark.parametrize("language", ["fr", "pt-BR ", "português", "pt_BR_x", "", "en-", 5, True, ["pt"], {}])
def test_any_other_language_is_refused_naming_the_field(language):
    details = failed_fields(StudentCreateSchema(), {**VALID, "language": language})
    assert list(details) == ["language"]
    assert failed_fields(StudentUpdateSchema(), {"language": language}) == details
    if isinstance(language, str):
        assert details["language"] == [
            "Must be en or pt_BR, a tag that means one (such as pt-BR, pt or en-US), or null."
        ]
        assert re.fullmatch(LANGUAGE, language) is None, "the published pattern refuses it"


def test_a_student_is_shown_with_their_language():
    student = SimpleNamespace(**VALID, id=1, language="pt_BR", status="enrolled", version=1)
    assert StudentSchema(only=("id", "language")).dump(student) == {"id": 1, "language": "pt_BR"}


def test_a_certificate_issued_event_may_carry_a_language():
    issued = {
        "code": "c" * 32,
        "student_name": "Ana",
        "student_email": "ana@example.com",
        "course": "Physics",
        "verification_url": "https://example.org/certificates/c",
    }
    assert load(CertificateIssuedSchema(), issued)["language"] is None
    assert load(CertificateIssuedSchema(), {**issued, "language": "pt_BR"})["language"] == "pt_BR"


# --- StudentUpdateSchema ---------------------------------------------------


@pytest.mark.parametrize(
    ("data", "loaded"),
    [
        ({"name": " Bia "}, {"name": "Bia"}),
        ({"email": "BIA@Example.com"}, {"email": "bia@example.com"}),
        ({"course": "Maths", "name": "Bia"}, {"course": "Maths", "name": "Bia"}),
    ],
)
def test_update_is_partial(data, loaded):
    assert load(StudentUpdateSchema(), data) == loaded


def test_update_rejects_empty():
    assert set(failed_fields(StudentUpdateSchema(), {})) == {"_schema"}


@pytest.mark.parametrize(
    ("data", "field"),
    [({"name": ""}, "name"), ({"email": "bad"}, "email"), ({"id": 3}, "id"), ({"status": "active"}, "status")],
)
def test_update_validates_given_fields(data, field):
    assert set(failed_fields(StudentUpdateSchema(), data)) == {field}


# --- StatusChangeSchema ----------------------------------------------------


def test_status_change_valid_with_defaults():
    assert load(StatusChangeSchema(), {"student_id": 3, "status": "active"}) == {
        "student_id": 3,
        "status": "active",
        "reason": None,
        "actor": None,
        "on_behalf_of": None,
        "idempotency_key": None,
        "request_id": None,
        "course": None,
        "correlation_id": None,
        "traceparent": None,
    }


def test_a_traceparent_that_is_not_w3c_trace_context_loads_as_none_and_refuses_nothing():
    good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    for value, expected in ((good, good), ("00-xyz", None), (good.upper(), None), (42, None), ("", None)):
        loaded = load(StatusChangeSchema(), {"student_id": 3, "status": "active", "traceparent": value})
        assert loaded["traceparent"] == expected


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"status": "graduated"}, "status"),
        ({"status": "ACTIVE"}, "status"),
        ({"status": None}, "status"),
        ({"student_id": 0}, "student_id"),
        ({"student_id": -1}, "student_id"),
        ({"student_id": "3"}, "student_id"),  # strict: no coercion from strings
        ({"student_id": 3.0}, "student_id"),
        ({"student_id": True}, "student_id"),
        ({"student_id": None}, "student_id"),
        ({"reason": "x" * 1001}, "reason"),
        ({"idempotency_key": ""}, "idempotency_key"),
        ({"idempotency_key": "k" * 201}, "idempotency_key"),
        ({"actor": "a" * 201}, "actor"),
        ({"on_behalf_of": "o" * 201}, "on_behalf_of"),
        ({"on_behalf_of": ""}, "on_behalf_of"),
        ({"on_behalf_of": 5}, "on_behalf_of"),
        ({"request_id": "not-a-uuid"}, "request_id"),
        ({"correlation_id": "c" * 129}, "correlation_id"),
        ({"correlation_id": "two words"}, "correlation_id"),
        ({"correlation_id": "café"}, "correlation_id"),
        ({"correlation_id": ""}, "correlation_id"),
        ({"priority": "high"}, "priority"),
    ],
)
def test_status_change_rejects(changes, field):
    data = {"student_id": 3, "status": "active", **changes}

    assert set(failed_fields(StatusChangeSchema(), data)) == {field}


def test_status_change_requires_student_and_status():
    assert set(failed_fields(StatusChangeSchema(), {})) == {"student_id", "status"}


def test_status_change_on_behalf_of_is_a_line_next_to_the_actor():
    data = {"student_id": 3, "status": "active", "actor": "key:webapp", "on_behalf_of": " " + "o" * (ACTOR - 1)}

    loaded = load(StatusChangeSchema(), data)

    assert (loaded["actor"], loaded["on_behalf_of"]) == ("key:webapp", "o" * (ACTOR - 1))
    assert load(StatusChangeSchema(), {**data, "on_behalf_of": None})["on_behalf_of"] is None


def test_each_command_of_a_batch_keeps_its_own_correlation_id():
    commands = [{"student_id": n, "status": "active", "correlation_id": f"req-{n}"} for n in (1, 2)]
    old = {"student_id": 3, "status": "active"}  # from before correlation ids

    loaded = status_change_requests({"requests": [*commands, old]})

    assert [c["correlation_id"] for c in loaded] == ["req-1", "req-2", None]
    assert load(StatusChangeSchema(), {**old, "correlation_id": "c" * 128})["correlation_id"] == "c" * 128


def test_a_batch_of_old_commands_without_on_behalf_of_is_read():
    old = {"request_id": None, "student_id": 3, "status": "active", "actor": "http", "idempotency_key": None}
    new = {**old, "student_id": 4, "on_behalf_of": "ana"}

    loaded = load(StatusChangeBatchSchema(), {"requests": [old, new]})["requests"]

    assert [c["on_behalf_of"] for c in loaded] == [None, "ana"]
    details = failed_fields(StatusChangeBatchSchema(), {"requests": [{**new, "on_behalf_of": "o" * 201}]})
    assert details == {"requests": {"0": {"on_behalf_of": ["Length must be between 1 and 200."]}}}


# --- JobOptionsSchema --------------------------------------------------------


def test_job_options_default_to_none():
    assert load(JobOptionsSchema(), {}) == {
        "idempotency_key": None,
        "actor": None,
        "on_behalf_of": None,
        "correlation_id": None,
    }


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"idempotency_key": "k" * 201}, "idempotency_key"),
        ({"actor": "a" * 201}, "actor"),
        ({"on_behalf_of": "o" * 201}, "on_behalf_of"),
        ({"on_behalf_of": "ana\nlima"}, "on_behalf_of"),
        ({"on_behalf_of": ["ana"]}, "on_behalf_of"),
        ({"correlation_id": "job id"}, "correlation_id"),
    ],
)
def test_job_options_reject(changes, field):
    assert set(failed_fields(JobOptionsSchema(), {"actor": "key:webapp", **changes})) == {field}


# --- what the status service returns --------------------------------------


@pytest.mark.parametrize("schema", [StatusRequestSchema(), HistoryEntrySchema()])
@pytest.mark.parametrize("on_behalf_of", ["ana", None])
def test_requests_and_history_carry_on_behalf_of_next_to_the_actor(schema, on_behalf_of):
    row = SimpleNamespace(actor="key:webapp", on_behalf_of=on_behalf_of, error_code=None)

    dumped = schema.dump(row)

    assert (dumped["actor"], dumped["on_behalf_of"]) == ("key:webapp", on_behalf_of)


def test_a_job_carries_on_behalf_of_next_to_the_actor():
    assert JobSchema().dump({"actor": "key:webapp", "on_behalf_of": "ana"}) == {
        "actor": "key:webapp",
        "on_behalf_of": "ana",
    }


@pytest.mark.parametrize("value", [0, -5, True, "1", 1.5, None, 2**31, 10**20])
def test_positive_id_rejects(value):
    with pytest.raises(ValidationFailed) as info:
        positive_id(value)
    assert info.value.details == {"student_id": ["Must be an integer from 1 to 2147483647."]}


def test_positive_id_accepts():
    assert positive_id(12) == 12


# --- ListStudentsSchema ----------------------------------------------------


def test_list_defaults():
    assert load(ListStudentsSchema(), {}) == {
        "status": None,
        "course": None,
        "name": None,
        "limit": DEFAULT_LIMIT,
        "cursor": None,
    }


@pytest.mark.parametrize(("limit", "loaded"), [(1, 1), (500, 500), ("20", 20)])
def test_list_limit_within_bounds(limit, loaded):
    assert load(ListStudentsSchema(), {"limit": limit})["limit"] == loaded


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 501}, "limit"),
        ({"limit": -1}, "limit"),
        ({"limit": "many"}, "limit"),
        ({"status": "graduated"}, "status"),
        ({"course": ""}, "course"),
        ({"page": 2}, "page"),
    ],
)
def test_list_rejects(data, field):
    assert set(failed_fields(ListStudentsSchema(), data)) == {field}


def test_list_accepts_a_status_filter():
    assert load(ListStudentsSchema(), {"status": "suspended"})["status"] == "suspended"


# --- cursors -----------------------------------------------------------------


@pytest.mark.parametrize("last_id", [1, 2, 99, 123456789])
def test_cursor_round_trip(last_id):
    cursor = encode_cursor(last_id)

    assert "=" not in cursor
    assert decode_cursor(cursor) == last_id


@pytest.mark.parametrize("cursor", [None, ""])
def test_no_cursor_means_first_page(cursor):
    assert decode_cursor(cursor) is None


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode()


@pytest.mark.parametrize(
    "cursor",
    ["!!!", "a", "@@@@", "é", _b64("after:"), _b64("after:x"), _b64("before:3"), _b64("3"), _b64("after:1.5")],
)
def test_invalid_cursor(cursor):
    with pytest.raises(ValidationFailed) as info:
        decode_cursor(cursor)
    assert info.value.details == {"cursor": ["Invalid cursor."]}


@pytest.mark.parametrize(
    ("rows", "items", "more"), [([1, 2, 3], [1, 2], True), ([1, 2], [1, 2], False), ([], [], False)]
)
def test_page_splits_rows(rows, items, more):
    class Row:
        def __init__(self, id_):
            self.id = id_

    got, cursor = page([Row(i) for i in rows], limit=2)

    assert [row.id for row in got] == items
    assert cursor == (encode_cursor(items[-1]) if more else None)


# --- text: printable, any script; a line is trimmed -----------------------------

SCRIPTS = [
    "João Conceição",  # Portuguese
    "Αθηνά Παπαδοπούλου",  # Greek
    "王小明",  # Chinese
    "佐藤 はると",  # Japanese
    "محمد الأحمد",  # Arabic
    "שרה לוי",  # Hebrew
    "Ольга Иванова",  # Cyrillic
    "अनन्या शर्मा",  # Devanagari
    "می\u200cخواهم",  # noqa: RUF001 - Persian, with a zero-width non-joiner (a format character)
    "Zoë 👩🏽\u200d🔬",  # an emoji sequence: astral characters and a zero-width joiner
    "Ana\u00a0Lima\u3000Sá",  # spaces of other kinds, inside
]
# C0, DEL, C1 (the U+0086 and U+009F among them), and line breaks inside a line
CONTROLS = ["\x00", "\x07", "\x08", "\x1b", "\x1c", "\x7f", "\x85", "\x86", "\x9f", "\t", "\n", "\r", "\u2028"]


@pytest.mark.parametrize("text", SCRIPTS)
def test_every_printable_script_is_accepted(text):
    loaded = load(StudentCreateSchema(), {**VALID, "name": text, "course": text})

    assert (loaded["name"], loaded["course"]) == (text, text)
    assert load(StatusChangeBodySchema(), {"status": "active", "reason": text})["reason"] == text


@pytest.mark.parametrize("char", CONTROLS, ids=lambda c: f"U+{ord(c):04X}")
@pytest.mark.parametrize("field", ["name", "course"])
def test_control_characters_in_a_line_are_refused(field, char):
    details = failed_fields(StudentCreateSchema(), {**VALID, field: f"Ana{char}Lima"})

    assert details == {field: [f"Must be one line without control characters (U+{ord(char):04X})."]}


@pytest.mark.parametrize(
    ("schema", "data", "field"),
    [
        (StudentUpdateSchema(), {"name": "Ana\x86"}, "name"),
        (StudentCreateSchema(), {**VALID, "email": '"a\x01b"@example.com'}, "email"),
        (ListStudentsSchema(), {"course": "Physics\x9f"}, "course"),
        (CompletionBodySchema(), {"course": "\x1bPhysics"}, "course"),
        (StatusChangeSchema(), {"student_id": 3, "status": "active", "actor": "ana\x00"}, "actor"),
        (StatusChangeSchema(), {"student_id": 3, "status": "active", "on_behalf_of": "ana\x00"}, "on_behalf_of"),
        (JobOptionsSchema(), {"on_behalf_of": "ana\u2028lima"}, "on_behalf_of"),
        (StatusChangeSchema(), {"student_id": 3, "status": "active", "idempotency_key": "k\x7f"}, "idempotency_key"),
        (StatusChangeSchema(), {"student_id": 3, "status": "active", "course": "a\nb"}, "course"),
        (StatusChangeBodySchema(), {"status": "active", "reason": "why\x07"}, "reason"),
        (JobRowSchema(), {"student_id": 3, "status": "active", "reason": "\x85"}, "reason"),
        (HistoryQuerySchema(), {"cursor": encode_cursor(3) + "\n"}, "cursor"),
    ],
)
def test_every_text_field_refuses_control_characters(schema, data, field):
    assert set(failed_fields(schema, data)) == {field}


def test_a_reason_may_span_lines_but_holds_no_other_control():
    reason = "first line\r\nsecond\tline\n"

    assert load(StatusChangeBodySchema(), {"status": "active", "reason": reason})["reason"] == reason
    details = failed_fields(StatusChangeBodySchema(), {"status": "active", "reason": "a\x0cb"})
    assert details == {"reason": ["Must not contain control characters other than tab and line breaks (U+000C)."]}


@pytest.mark.parametrize(
    ("schema", "data", "field"),
    [(StudentCreateSchema(), VALID, "name"), (StatusChangeBodySchema(), {"status": "active"}, "reason")],
)
def test_a_lone_surrogate_is_refused(schema, data, field):
    details = failed_fields(schema, {**data, field: "Ana\ud800"})

    assert details == {field: ["Must be valid Unicode (a lone surrogate, U+D800)."]}


def test_a_line_is_trimmed_of_spaces_and_line_breaks_only():
    loaded = load(StudentCreateSchema(), {**VALID, "name": "\u3000 Ana\u00a0Lima\r\n", "course": "Physics"})
    assert loaded["name"] == "Ana\u00a0Lima"
    # str.strip() would also drop U+001C and U+0085: here they are refused, at the edges too
    assert set(failed_fields(StudentCreateSchema(), {**VALID, "name": "Ana\x1c"})) == {"name"}
    assert set(failed_fields(StudentCreateSchema(), {**VALID, "name": "\x85Ana"})) == {"name"}


@pytest.mark.parametrize("blank", [" ", "\t \n", "\u3000\u00a0", "\u2029"])
def test_a_blank_line_is_refused(blank):
    assert failed_fields(StudentCreateSchema(), {**VALID, "name": blank}) == {"name": ["Must not be blank."]}


def test_a_line_is_measured_as_sent():
    assert set(failed_fields(StudentCreateSchema(), {**VALID, "name": " " + "n" * 200})) == {"name"}


def test_the_line_pattern_is_the_rule():
    """What ``LINE`` (the fields' pattern in the OpenAPI document) matches is what a line
    field accepts: every character but controls, line and paragraph separators and lone
    surrogates; format, private-use and unassigned characters pass (a zero-width joiner
    belongs to several scripts)."""
    disagreements = []
    for char in [*map(chr, range(0x3100)), "\ud800", "\ue000", "\ufeff", "😀", "\U0010fffd"]:
        value = f"a{char}b"
        try:
            load(StudentUpdateSchema(), {"name": value})
            accepted = True
        except ValidationFailed:
            accepted = False
        by_pattern = bool(re.fullmatch(LINE, value)) and not 0xD800 <= ord(char) <= 0xDFFF
        by_category = unicodedata.category(char) not in {"Cc", "Zl", "Zp", "Cs"}
        if not accepted == by_pattern == by_category:
            disagreements.append((f"U+{ord(char):04X}", accepted, by_pattern, by_category))

    assert disagreements == []


# --- e-mail addresses --------------------------------------------------------


@pytest.mark.parametrize("email", ["ana@example.com", "a.b+c@sub.example.pt", "joão@escola.pt", "用户@例子.广告"])
def test_email_accepted(email):
    assert re.fullmatch(EMAIL, email)
    assert load(StudentCreateSchema(), {**VALID, "email": email})["email"] == email.lower()


@pytest.mark.parametrize(
    "email",
    ["0@0.a", "a@b", "a@localhost", '"a b"@example.com', "a@[192.0.2.1]", "a..b@example.com", "a@-x.com", "a@b.-cd"],
)
def test_email_outside_the_published_pattern_is_refused(email):
    """Forms some validators of ``format: email`` accept and marshmallow's check may too:
    the pattern says which are accepted, and the server keeps to it."""
    assert not re.fullmatch(EMAIL, email)
    assert failed_fields(StudentCreateSchema(), {**VALID, "email": email}) == {"email": ["Not a valid email address."]}


# --- cursors as query parameters (the pattern a generator can use) -------------


@pytest.mark.parametrize("last_id", [0, 1, 9, 10, 99, 100, 999, 1000, 12345, 1234567, 123456789, 1000000000, MAX_ID])
def test_every_issued_cursor_matches_the_pattern(last_id):
    cursor = encode_cursor(last_id)

    assert re.fullmatch(CURSOR, cursor)
    assert load(ListStudentsSchema(), {"cursor": cursor})["cursor"] == cursor


@settings(max_examples=300, database=None, deadline=None)
@given(st.from_regex(CURSOR, fullmatch=True))
def test_every_cursor_the_pattern_admits_is_read(cursor):
    loaded = load(HistoryQuerySchema(), {"cursor": cursor})["cursor"]

    assert loaded is None if cursor == "" else 0 <= decode_cursor(loaded) <= MAX_ID


def test_a_cursor_past_the_largest_id_reads_as_the_end():
    past = base64.urlsafe_b64encode(b"after:9999999999").decode().rstrip("=")

    assert load(ListStudentsSchema(), {"cursor": past})["cursor"] == encode_cursor(MAX_ID)


@pytest.mark.parametrize("cursor", ["garbage", "YWZ0ZXI6", _b64("after:x"), encode_cursor(7) + "=", "é"])
def test_a_cursor_outside_the_pattern_is_refused(cursor):
    assert failed_fields(ListStudentsSchema(), {"cursor": cursor}) == {"cursor": ["Invalid cursor."]}
