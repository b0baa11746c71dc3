"""Which languages there are, and which one a tag or an ``Accept-Language`` header means."""

from __future__ import annotations

from babel.core import parse_locale
from werkzeug.datastructures import LanguageAccept
from werkzeug.http import parse_accept_header

LANGUAGES = ("en", "pt_BR")
DEFAULT = "en"

# a language tag's primary language -> ours: any English reads en, any Portuguese pt_BR
_BY_PRIMARY = {"en": "en", "pt": "pt_BR"}


def normalize(value: str | None) -> str | None:
    """The one of :data:`LANGUAGES` a language tag means (``"pt-BR"``, ``"pt_br"``, ``"pt"`` ->
    ``"pt_BR"``; ``"en-US"`` -> ``"en"``); None for None or any other language."""
    if not isinstance(value, str):
        return None
    try:  # language[-script][-region], in any case; Babel would also take anything else as a variant
        primary, _region, _script, variant, *modifier = parse_locale(value.strip().replace("-", "_"))
    except ValueError:  # not a language tag at all
        return None
    if variant or any(modifier):
        return None
    return _BY_PRIMARY.get(primary)


def negotiate(accept_language: str | None, default: str) -> str:
    """The best of :data:`LANGUAGES` for an HTTP ``Accept-Language`` header, by its q-values
    (ties in the header's order); ``default`` when it names none of them, or only ``*``."""
    for tag, quality in parse_accept_header(accept_language, LanguageAccept):  # best first, "*" last
        if quality <= 0:
            continue
        if tag == "*":
            return default
        language = normalize(tag)
        if language is not None:
            return language
    return default
