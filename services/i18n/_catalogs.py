"""The translations: read from the ``.po`` catalogs in ``locales/`` and compiled in memory
once per process (no ``.mo`` file to go stale), and Jinja2 environments that use them."""

from __future__ import annotations

import functools
import gettext
import io
from pathlib import Path
from typing import Any

import jinja2
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from services import lifecycle
from services.i18n._languages import DEFAULT, LANGUAGES

LOCALES = Path(__file__).resolve().parent / "locales"
DOMAIN = "messages"


def catalog_path(language: str) -> Path:
    return LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po"


@functools.cache
def translations(language: str) -> gettext.NullTranslations:
    """``language``'s translations (fuzzy entries left out); an unknown language gets the default's."""
    if language not in LANGUAGES:
        return translations(DEFAULT)
    with catalog_path(language).open("rb") as po:
        catalog = read_po(po, locale=language, domain=DOMAIN)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return Translations(compiled, domain=DOMAIN)


def environment(loader: jinja2.BaseLoader, language: str, **jinja_options: Any) -> jinja2.Environment:
    """A Jinja2 environment whose templates speak ``language`` (``{% trans %}``, ``_()``,
    new-style gettext: escaped, with ``%(name)s`` placeholders), one per loader, language and
    options; pass the same loader and option values (e.g. module constants) to reuse it."""
    return _environment(loader, language, tuple(sorted(jinja_options.items())))


@functools.cache
def _environment(loader: jinja2.BaseLoader, language: str, options: tuple[tuple[str, Any], ...]) -> jinja2.Environment:
    env = jinja2.Environment(loader=loader, extensions=["jinja2.ext.i18n"], **dict(options))
    env.policies["ext.i18n.trimmed"] = True  # a {% trans %} block is one line of text, however it is wrapped
    env.install_gettext_translations(translations(language), newstyle=True)
    return env


def status_name(status: str, language: str) -> str:
    """A status's name in ``language`` ("completed" -> "concluído"); an unknown status as it is."""
    t = translations(language)
    names = {
        # TRANSLATORS: a student's status, as in "your status is now enrolled" (agrees with "status")
        lifecycle.ENROLLED: t.pgettext("status", "enrolled"),
        lifecycle.ACTIVE: t.pgettext("status", "active"),
        lifecycle.SUSPENDED: t.pgettext("status", "suspended"),
        lifecycle.COMPLETED: t.pgettext("status", "completed"),
        lifecycle.WITHDRAWN: t.pgettext("status", "withdrawn"),
    }
    return names.get(status, status)
