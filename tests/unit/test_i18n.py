"""The languages (services.i18n): which one a tag or a header means, dates, status names, the
per-language Jinja2 environments, and the catalogs, which must translate every text the code
and the templates hold (so a new English text without its Portuguese fails here)."""

from __future__ import annotations

import os
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path

import jinja2
import pytest
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from services import i18n, lifecycle
from services.i18n import _catalogs
from services.infra.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("pt_BR", "pt_BR"),
        ("pt-BR", "pt_BR"),
        ("pt_br", "pt_BR"),
        ("pt", "pt_BR"),
        ("PT", "pt_BR"),
        (" pt-BR ", "pt_BR"),
        ("pt-PT", "pt_BR"),  # any Portuguese reads Brazilian Portuguese rather than English
        ("en", "en"),
        ("en-US", "en"),
        ("EN_gb", "en"),
        ("fr", None),
        ("es-BR", None),
        ("", None),
        ("p t", None),
        ("pt-BR; DROP TABLE", None),
        (None, None),
        (5, None),
    ],
)
def test_normalize(value, expected):
    assert i18n.normalize(value) == expected


@pytest.mark.parametrize(
    ("header", "default", "expected"),
    [
        ("pt-BR,pt;q=0.9,en-US;q=0.8,en;q=0.7", "en", "pt_BR"),
        ("en-US,en;q=0.9,pt-BR;q=0.8", "pt_BR", "en"),
        ("en-US,pt-BR;q=0.9", "pt_BR", "en"),  # a region-less match never beats a better q-value
        ("fr-FR, pt;q=0.5, en;q=0.4", "en", "pt_BR"),
        ("en;q=0.2, pt;q=0.8", "en", "pt_BR"),
        ("en;q=0.5, pt;q=0.5", "pt_BR", "en"),  # a tie: the header's order
        ("fr, de;q=0.5", "pt_BR", "pt_BR"),
        ("*", "pt_BR", "pt_BR"),
        ("fr, *;q=0.5", "en", "en"),
        ("pt;q=0, en;q=0", "pt_BR", "pt_BR"),
        ("pt;q=0, *", "en", "en"),
        ("", "en", "en"),
        (None, "pt_BR", "pt_BR"),
        ("pt;q=nonsense, en", "pt_BR", "en"),  # an invalid q drops its item
    ],
)
def test_negotiate(header, default, expected):
    assert i18n.negotiate(header, default) == expected


def test_the_default_language_setting_offers_exactly_the_languages():
    spec = next(f for f in Settings.__dataclass_fields__.values() if f.name == "default_language")
    assert spec.metadata["choices"] == i18n.LANGUAGES and spec.default == i18n.DEFAULT == "en"


class TestDates:
    def test_a_date_as_each_language_writes_it(self):
        assert i18n.format_date(date(2026, 12, 2), "pt_BR") == "2 de dezembro de 2026"
        assert i18n.format_date(date(2026, 12, 2), "en") == "December 2, 2026"
        assert i18n.format_date(datetime(2026, 3, 1, 23, 0, tzinfo=UTC), "pt_BR") == "1 de março de 2026"

    def test_an_unknown_language_writes_the_default_s(self):
        assert i18n.format_date(date(2026, 12, 2), "xx") == "December 2, 2026"

    def test_a_date_and_time_in_utc(self):
        when = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
        assert i18n.format_datetime(when, "pt_BR") == "1 de março de 2026 09:30 UTC"
        assert i18n.format_datetime(when, "en") == "March 1, 2026, 9:30\u202fAM UTC"

    def test_another_zone_is_shown_in_utc_and_a_naive_time_is_taken_as_utc(self):
        brasilia = timezone(timedelta(hours=-3))
        assert i18n.format_datetime(datetime(2026, 3, 1, 22, 0, tzinfo=brasilia), "pt_BR") == (
            "2 de março de 2026 01:00 UTC"
        )
        assert i18n.format_datetime(datetime(2026, 3, 1, 9, 30), "pt_BR") == "1 de março de 2026 09:30 UTC"


class TestStatusNames:
    @pytest.mark.parametrize(
        ("status", "portuguese"),
        [
            ("enrolled", "matriculado"),
            ("active", "ativo"),
            ("suspended", "suspenso"),
            ("completed", "concluído"),
            ("withdrawn", "desligado"),
        ],
    )
    def test_each_status_in_each_language(self, status, portuguese):
        assert i18n.status_name(status, "pt_BR") == portuguese
        assert i18n.status_name(status, "en") == status

    def test_every_status_has_a_name(self):
        assert {i18n.status_name(s, "pt_BR") for s in lifecycle.STATUSES} & set(lifecycle.STATUSES) == set()

    def test_an_unknown_status_or_language(self):
        assert i18n.status_name("graduated", "pt_BR") == "graduated"
        assert i18n.status_name("completed", "fr") == "completed"


class TestTranslations:
    def test_cached_per_language_and_an_unknown_one_gets_the_default_s(self):
        assert i18n.translations("pt_BR") is i18n.translations("pt_BR")
        assert i18n.translations("xx") is i18n.translations("en")
        assert i18n.translations("pt_BR").gettext("REVOKED") == "REVOGADO"
        assert i18n.translations("en").gettext("REVOKED") == "REVOKED"
        assert i18n.translations("pt_BR").gettext("a text nobody wrote") == "a text nobody wrote"

    def test_an_environment_per_loader_language_and_options(self):
        loader = jinja2.DictLoader({"t.txt": '{% trans %}Hello {{ name }},{% endtrans %} {{ _("REVOKED") }}'})
        escape = jinja2.select_autoescape(["html"])
        pt = i18n.environment(loader, "pt_BR", autoescape=escape, undefined=jinja2.StrictUndefined)
        assert pt is i18n.environment(loader, "pt_BR", undefined=jinja2.StrictUndefined, autoescape=escape)
        assert pt is not i18n.environment(loader, "en", autoescape=escape, undefined=jinja2.StrictUndefined)
        assert pt.get_template("t.txt").render(name="João") == "Olá, João, REVOGADO"
        en = i18n.environment(loader, "en")
        assert en.get_template("t.txt").render(name="Ana") == "Hello Ana, REVOKED"

    def test_new_style_gettext_escapes_values_in_html(self):
        loader = jinja2.DictLoader({"t.html": "<p>{% trans %}Hello {{ name }},{% endtrans %}</p>"})
        env = i18n.environment(loader, "pt_BR", autoescape=True)
        assert env.get_template("t.html").render(name="<Ana & Bia>") == "<p>Olá, &lt;Ana &amp; Bia&gt;,</p>"


# --- the catalogs -------------------------------------------------------------


def extracted() -> dict[tuple[str | None, str], list[str]]:
    """Every text to translate, ``(context, msgid)``, with where it is, as ``make messages`` finds
    them: ``babel.cfg``'s mapping, no hidden directories."""
    with (ROOT / "babel.cfg").open() as config:
        method_map, options_map = parse_mapping_cfg(config)

    def visible(path: str) -> bool:
        name = os.path.basename(path)
        return not name.startswith(".") and name != "__pycache__"

    found: dict[tuple[str | None, str], list[str]] = {}
    for filename, line, message, _comments, context in extract_from_dir(
        ROOT, method_map, options_map, directory_filter=visible
    ):
        msgid = message[0] if isinstance(message, tuple) else message
        found.setdefault((context, msgid), []).append(f"{filename}:{line}")
    return found


EXTRACTED = extracted()


def catalog(path: Path):
    with path.open("rb") as po:
        return read_po(po)


def entries(path: Path) -> dict[tuple[str | None, str], object]:
    return {(m.context, m.id if isinstance(m.id, str) else m.id[0]): m for m in catalog(path) if m.id}


def test_the_texts_are_found_in_code_and_templates():
    places = {place.split(":")[0] for where in EXTRACTED.values() for place in where}
    assert {
        "services/_certificates/pdf.py",
        "services/i18n/_catalogs.py",
        "services/_notifications/templates/base.html",
        "services/_notifications/templates/student_status_changed.txt",
        "services/_notifications/templates/certificate_issued.subject.txt",
    } <= places
    assert (None, "Certificate of Completion") in EXTRACTED and ("status", "completed") in EXTRACTED


def test_every_text_is_translated_into_brazilian_portuguese():
    path = _catalogs.catalog_path("pt_BR")
    messages = entries(path)
    missing = sorted(f"{key} ({', '.join(EXTRACTED[key])})" for key in EXTRACTED.keys() - messages.keys())
    untranslated = sorted(str(key) for key, m in messages.items() if not m.string)
    fuzzy = sorted(str(key) for key, m in messages.items() if m.fuzzy)
    left_over = sorted(str(key) for key in messages.keys() - EXTRACTED.keys())
    obsolete = sorted(str(key) for key in catalog(path).obsolete)
    assert (missing, untranslated, fuzzy, left_over, obsolete) == ([], [], [], [], []), (
        "run `make messages`, then translate what is new in " + str(path.relative_to(ROOT))
    )


def test_the_template_and_the_english_catalog_hold_the_same_texts():
    for path in (_catalogs.LOCALES / "messages.pot", _catalogs.catalog_path("en")):
        assert entries(path).keys() == EXTRACTED.keys(), f"run `make messages` ({path.relative_to(ROOT)})"
        assert not catalog(path).obsolete


@pytest.mark.parametrize("language", i18n.LANGUAGES)
def test_translations_keep_their_placeholders(language):
    problems = [(m.id, errors) for m, errors in catalog(_catalogs.catalog_path(language)).check() if errors]
    assert problems == []
