"""The languages a person reads mensageria in: English and Brazilian Portuguese.

Texts are written in English in the code and templates (``_("...")``, ``{% trans %}``) and
translated in ``locales/<language>/LC_MESSAGES/messages.po`` (``make messages`` extracts
and updates them); dates follow the language's conventions::

    from services import i18n

    language = i18n.normalize(student.get("language")) or settings.default_language
    t = i18n.translations(language)
    t.gettext("Certificate of Completion")          # "Certificado de Conclusão" in pt_BR
    i18n.format_date(date(2026, 12, 2), language)    # "2 de dezembro de 2026"
    i18n.status_name("completed", language)          # "concluído"
"""

from services.i18n._catalogs import environment, status_name, translations
from services.i18n._dates import format_date, format_datetime
from services.i18n._languages import DEFAULT, LANGUAGES, negotiate, normalize

__all__ = [
    "DEFAULT",
    "LANGUAGES",
    "environment",
    "format_date",
    "format_datetime",
    "negotiate",
    "normalize",
    "status_name",
    "translations",
]
