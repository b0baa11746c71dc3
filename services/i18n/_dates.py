"""Dates and times as each language writes them (CLDR, through Babel)."""

from __future__ import annotations

from datetime import UTC, date, datetime

from babel import dates

from services.i18n._languages import DEFAULT, LANGUAGES


def format_date(value: date | datetime, language: str) -> str:
    """The long date: "December 2, 2026" (en), "2 de dezembro de 2026" (pt_BR)."""
    return dates.format_date(value, "long", locale=_locale(language))


def format_datetime(value: datetime, language: str) -> str:
    """The long date and the short time in UTC, joined as the language joins them:
    "March 1, 2026, 9:30 AM UTC" (en), "1 de março de 2026 09:30 UTC" (pt_BR)."""
    language = _locale(language)
    value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    time = dates.format_time(value, "short", tzinfo=UTC, locale=language)
    # what babel.dates.format_datetime does with a named format, with a time of its own
    pattern = dates.get_datetime_format("long", locale=language).replace("'", "")
    return pattern.replace("{0}", f"{time} UTC").replace("{1}", format_date(value, language))


def _locale(language: str) -> str:
    return language if language in LANGUAGES else DEFAULT  # as translations() does
