"""Field types of the wire contracts: one-line text, free text, e-mail addresses, languages,
correlation ids, page cursors. Each rule is a regular expression that is both enforced here and published in
the OpenAPI document (so a client, or a property-based tester, generates what we accept).
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import ValidationError, fields, validate

from services import i18n
from services.exceptions import ValidationFailed
from services.infra.correlation import PATTERN as CORRELATION_ID
from services.infra.pagination import MAX_ID, decode_cursor, encode_cursor

# --- text -------------------------------------------------------------------
# Text is printable, in any script. A line (a name, a course, an e-mail, an actor, a
# key) is trimmed of the spaces, tabs and line breaks around it and holds no control
# character (Unicode Cc: C0, DEL, C1) nor line or paragraph separator; free text (a
# reason) may span lines (tab, CR, LF) but holds no other control character. Lone
# surrogates are refused everywhere. Each rule is also the ``pattern`` of its fields in
# the OpenAPI document, written so that ECMA-262 and Python's ``re`` read it alike.
_CONTROL = r"\u0000-\u001f\u007f-\u009f"  # Unicode Cc
_SEPARATOR = r"\u2028\u2029"  # Zl, Zp
_BLANK = r" \u00a0\u1680\u2000-\u200a\u202f\u205f\u3000"  # Zs
_SPACE = rf"\t\n\r{_BLANK}{_SEPARATOR}"  # what str.strip() removes, less the other controls
SPACES = "\t\n\r \u00a0\u1680" + "".join(map(chr, range(0x2000, 0x200B))) + "\u2028\u2029\u202f\u205f\u3000"
_INSIDE = f"[^{_CONTROL}{_SEPARATOR}]"
_VISIBLE = f"[^{_CONTROL}{_SEPARATOR}{_BLANK}]"
_CONTENT = f"{_VISIBLE}(?:{_INSIDE}*{_VISIBLE})?"
LINE = f"^[{_SPACE}]*{_CONTENT}[{_SPACE}]*$"
FREE_TEXT = r"^[^\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]*$"
# lone surrogates: JSON can carry one ("\\ud800"), UTF-8 cannot (a pair is one character
# in Python); and what each rule refuses inside the text, to say why
SURROGATE = _SURROGATE = re.compile("[\ud800-\udfff]")
_REFUSED_IN_LINE = re.compile(f"[{_CONTROL}{_SEPARATOR}\ud800-\udfff]")
_REFUSED_IN_TEXT = re.compile("[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f\ud800-\udfff]")


class FullMatch(validate.Regexp):
    """``validate.Regexp`` matched against the whole value, as JSON Schema's ``^...$``
    means it (Python's ``$`` also matches before a final newline)."""

    def __call__(self, value: str) -> str:
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class Printable(FullMatch):
    """``LINE`` or ``FREE_TEXT``, with a message that names the first
    character refused."""

    def __init__(self, pattern: str = LINE):
        super().__init__(pattern)
        self.refused = _REFUSED_IN_TEXT if pattern == FREE_TEXT else _REFUSED_IN_LINE

    def __call__(self, value: str) -> str:
        if not value:
            return value  # the length, if any, says why an empty one is refused
        if self.regex.fullmatch(value) is None or _SURROGATE.search(value):
            raise ValidationError(self._problem(value))
        return value

    def _problem(self, value: str) -> str:
        inside = value if self.refused is _REFUSED_IN_TEXT else value.strip(SPACES)
        found = self.refused.search(inside)
        if found is None:
            return "Must not be blank."
        char = ord(found.group())
        if 0xD800 <= char <= 0xDFFF:
            return f"Must be valid Unicode (a lone surrogate, U+{char:04X})."
        if self.refused is _REFUSED_IN_TEXT:
            return f"Must not contain control characters other than tab and line breaks (U+{char:04X})."
        return f"Must be one line without control characters (U+{char:04X})."


class Line(fields.String):
    """One line of text (``LINE``), up to ``max_length`` characters as sent, then trimmed."""

    def __init__(self, max_length: int, **kwargs: Any):
        super().__init__(validate=[validate.Length(min=1, max=max_length), Printable(LINE)], **kwargs)

    def deserialize(self, value: Any, attr: str | None = None, data: Any = None, **kwargs: Any) -> Any:
        output = super().deserialize(value, attr, data, **kwargs)
        return output.strip(SPACES) if isinstance(output, str) else output


class FreeText(fields.String):
    """Text that may span lines (``FREE_TEXT``), kept as sent."""

    def __init__(self, max_length: int, **kwargs: Any):
        super().__init__(validate=[validate.Length(max=max_length), Printable(FREE_TEXT)], **kwargs)


# An e-mail address: marshmallow's check, narrowed to what a client's check of ``format:
# email`` accepts too, and published as its pattern: a dot-atom before the @ (no quoted
# form), host names after it with a last label of two characters or more (no address
# literal, no bare "localhost"). Letters of any script are allowed (RFC 6531).
_ATEXT = rf'[^{_CONTROL}{_SEPARATOR}{_BLANK}"(),.:;<>@\[\\\]]'
_NOT_HOST = rf"{_CONTROL}{_SEPARATOR}{_BLANK}\u0021-\u002c\u002e\u002f\u003a-\u0040\u005b-\u0060\u007b-\u007e"
_HOST = f"[^{_NOT_HOST}\\u002d]"  # a letter or digit, of any script
_HOST_OR_HYPHEN = f"[^{_NOT_HOST}]"
_LABEL = f"{_HOST}(?:{_HOST_OR_HYPHEN}{{0,61}}{_HOST})?"
_LAST_LABEL = f"{_HOST}{_HOST_OR_HYPHEN}{{0,61}}{_HOST}"
EMAIL = f"^[{_SPACE}]*{_ATEXT}+(?:\\.{_ATEXT}+)*@(?:{_LABEL}\\.)+{_LAST_LABEL}[{_SPACE}]*$"


class EmailCheck(validate.Email):
    """marshmallow's e-mail check, and ``EMAIL``."""

    regex = re.compile(EMAIL)  # apispec publishes it as the field's pattern

    def __call__(self, value: str) -> str:
        super().__call__(value)
        if self.regex.fullmatch(value) is None:
            raise ValidationError(self._format_error(value))
        return value


class EmailAddress(fields.String):
    """An e-mail address (``EmailCheck``) of up to 320 characters."""

    def __init__(self, **kwargs: Any):
        validators = [validate.Length(max=320), EmailCheck()]
        super().__init__(validate=validators, metadata={"format": "email"}, **kwargs)


# A language: one of ``i18n.LANGUAGES``, or a tag that means one, in any case, with or without
# a region ("pt-BR", "pt_br", "PT", "en-US"); any Portuguese is pt_BR, any English en.
LANGUAGE = "^(?:[Ee][Nn]|[Pp][Tt])(?:[-_][A-Za-z]{2})?$"


class Language(fields.String):
    """A language (``LANGUAGE``), loaded as the one of ``i18n.LANGUAGES`` it means; null for none."""

    def __init__(self, **kwargs: Any):
        error = f"Must be {' or '.join(i18n.LANGUAGES)}, a tag that means one (such as pt-BR, pt or en-US), or null."
        super().__init__(allow_none=True, validate=FullMatch(LANGUAGE, error=error), **kwargs)

    def deserialize(self, value: Any, attr: str | None = None, data: Any = None, **kwargs: Any) -> Any:
        output = super().deserialize(value, attr, data, **kwargs)
        return i18n.normalize(output) if isinstance(output, str) else output


class CorrelationId(fields.String):
    """A correlation id (:mod:`services.infra.correlation`): 1 to 128 visible ASCII characters."""

    def __init__(self, **kwargs: Any):
        super().__init__(validate=FullMatch(f"^{CORRELATION_ID}$"), **kwargs)


class TraceParent(fields.Field):
    """A W3C ``traceparent`` riding with an item of a batched message (:mod:`services.infra.tracing`).
    Never a reason to refuse the item: anything that is not valid trace context loads as None
    (the work then starts a trace of its own, as W3C trace context asks)."""

    PATTERN = re.compile(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("load_default", None)
        kwargs.setdefault("allow_none", True)
        super().__init__(**kwargs)

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str | None:
        return value if isinstance(value, str) and self.PATTERN.fullmatch(value) else None


# --- cursors ----------------------------------------------------------------
# A cursor is opaque: pass the ``next_cursor`` of a page to get the next one. Its
# pattern (what encode_cursor issues: unpadded base64url of "after:<1 to 10 digits>")
# is published only so that a generator of requests can make cursors the server reads.
# "after:" is six bytes ("YWZ0ZXI6"); each three digits then make four characters.
_DIGITS_3 = "(?:[MN][DTjz]|O[DT])[AEIMQUYcgk][w-z0-5]"
_DIGITS_2 = "(?:[MN][DTjz]|O[DT])[AEIMQUYcgk]"
_DIGITS_1 = "(?:[MN][AQgw]|O[AQ])"
_AFTER_DIGITS = f"(?:{_DIGITS_3}){{0,3}}{_DIGITS_1}|(?:{_DIGITS_3}){{0,2}}{_DIGITS_2}|(?:{_DIGITS_3}){{1,3}}"
CURSOR = f"^(?:YWZ0ZXI6(?:{_AFTER_DIGITS}))?$"


class Cursor(fields.String):
    """A page cursor (``CURSOR``); empty is the first page. A cursor past the largest
    possible id reads as the end of the list."""

    def __init__(self, **kwargs: Any):
        validator = FullMatch(CURSOR, error="Invalid cursor.")
        super().__init__(load_default=None, allow_none=True, validate=validator, **kwargs)

    def deserialize(self, value: Any, attr: str | None = None, data: Any = None, **kwargs: Any) -> Any:
        cursor = super().deserialize(value, attr, data, **kwargs)
        if not cursor:
            return None
        try:
            decode_cursor(cursor)
        except ValidationFailed:  # the pattern admits ten digits: some are past MAX_ID
            return encode_cursor(MAX_ID)
        return cursor
