"""The certificate PDF in each language, read back with pypdf; its QR code read from the page."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import pypdfium2
import pytest
import segno.encoder
import zxingcpp
from pypdf import PdfReader
from reportlab import rl_config
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont

from services._certificates import pdf
from services._certificates.pdf import qr_modules, render_certificate

ISSUED_AT = datetime(2026, 12, 2, 15, 30, tzinfo=UTC)
URL = "https://escola.example/certificates/abc123"


def read(language: str | None = None, revoked: bool = False) -> tuple[str, str]:
    """The page's text, one line per drawn string, and the document's title."""
    options = {"language": language} if language else {}
    document = render_certificate(
        name="João Conceição",
        course="Física Nuclear",
        issued_at=ISSUED_AT,
        code="abc123",
        verification_url=URL,
        revoked=revoked,
        **options,
    )
    reader = PdfReader(io.BytesIO(document))
    lines = [line.strip() for line in reader.pages[0].extract_text().splitlines()]
    return lines, reader.metadata.title


ENGLISH = [
    "Certificate of Completion",
    "This certifies that",
    "João Conceição",
    "has completed the course",
    "Física Nuclear",
    "Issued on December 2, 2026",
    "Verification code: abc123",
    f"Verify at: {URL}",
]
PORTUGUESE = [
    "Certificado de Conclusão",
    "Certificamos que",
    "João Conceição",
    "concluiu o curso",
    "Física Nuclear",
    "Emitido em 2 de dezembro de 2026",
    "Código de verificação: abc123",
    f"Verifique em: {URL}",
]


@pytest.mark.parametrize(
    ("language", "lines", "title"),
    [
        ("en", ENGLISH, "Certificate of completion — João Conceição"),
        ("pt_BR", PORTUGUESE, "Certificado de conclusão — João Conceição"),
    ],
)
def test_every_text_in_the_language(language, lines, title):
    assert read(language) == (lines, title)


def test_english_unless_told():
    assert read() == read("en")


@pytest.mark.parametrize(("language", "stamp"), [("en", "REVOKED"), ("pt_BR", "REVOGADO")])
def test_a_revoked_certificate_is_stamped_in_the_language(language, stamp):
    lines, _ = read(language, revoked=True)
    assert lines[-1] == stamp and stamp not in read(language)[0]


@pytest.mark.parametrize(
    "url",
    [URL, "https://certificados.escola-municipal.example.br/certificates/" + "x" * 40 + "?lang=pt-BR"],
)
def test_the_qr_code_on_the_page_reads_as_the_verification_url(url):
    """The page rasterized (pdfium) and read by a QR decoder (zxing-cpp), neither ours."""
    document = render_certificate(
        name="João Conceição", course="Física", issued_at=ISSUED_AT, code="abc123", verification_url=url
    )
    page = pypdfium2.PdfDocument(document)[0]
    image = page.render(scale=2).to_pil().convert("L")
    found = zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)
    assert [code.text for code in found] == [url]


def test_the_qr_code_is_the_urls_in_the_smallest_version_that_holds_it():
    modules = qr_modules(URL)
    # 42 bytes: more than version 2-L holds (32), within version 3-L (53): 29 by 29 modules
    assert len(modules) == 29 and all(len(row) == 29 for row in modules)
    assert modules[0][:7] == (True,) * 7  # a finder pattern's top edge, top left
    assert len(qr_modules(URL + "/" + "y" * 60)) > 29


@pytest.mark.parametrize(
    "url",
    [
        URL,
        "https://escola.example/certificates/" + "A" * 43,
        "http://localhost:8000/certificates/" + "x" * 22,
        "https://certificados.escola-municipal.example.br/certificates/Zm9vYmFyYmF6cXV4?lang=pt-BR",
    ],
)
def test_the_qr_code_has_the_mask_the_standard_s_penalty_rules_choose(url):
    """Of the eight mask patterns, the one with the lowest penalty (ISO/IEC 18004's rules, as segno
    scores them) over the same code with each mask forced."""
    scores = {}
    for mask in range(8):
        forced = zxingcpp.create_barcode(url, zxingcpp.BarcodeFormat.QRCode, ec_level="L", data_mask=mask)
        image = forced.to_image(scale=1, add_quiet_zones=False)
        size, pixels = image.shape[0], bytes(image)
        matrix = tuple(tuple(value < 128 for value in pixels[r * size : (r + 1) * size]) for r in range(size))
        scores[matrix] = segno.encoder.evaluate_mask([bytearray(row) for row in matrix], size, size)
    assert len(scores) == 8, "eight different symbols"
    assert scores[qr_modules(url)] == min(scores.values())


def test_files_given_are_embedded_and_read_back_by_two_readers():
    """The credential (and any file) in the document's EmbeddedFiles, as pypdf and pdfium read them."""
    files = [("certificate-abc123.jwt", b"eyJhbGciOiJFZERTQSJ9.e30.c2ln"), ("all-bytes.bin", bytes(range(256)) * 40)]
    document = render_certificate(
        name="João Conceição", course="Física", issued_at=ISSUED_AT, code="abc123", verification_url=URL, files=files
    )
    assert {name: data for name, [data] in PdfReader(io.BytesIO(document)).attachments.items()} == dict(files)
    pdfium = pypdfium2.PdfDocument(document)
    read = [pdfium.get_attachment(i) for i in range(pdfium.count_attachments())]
    assert [(a.get_name(), bytes(a.get_data())) for a in read] == sorted(files), "a name tree's keys sorted"
    assert "Certificate of Completion" in PdfReader(io.BytesIO(document)).pages[0].extract_text()

    bare = render_certificate(name="Ana", course="Física", issued_at=ISSUED_AT, code="abc123", verification_url=URL)
    assert (
        PdfReader(io.BytesIO(bare)).attachments == {} and "/Names" not in PdfReader(io.BytesIO(bare)).trailer["/Root"]
    )


def test_reportlab_runs_with_its_c_accelerators():
    """``rl_accel`` installed: reportlab formats numbers and encodes streams in C (its pure-Python
    fallbacks made a page 12.7 ms instead of 8.0)."""
    from reportlab.lib import rl_accel

    assert rl_accel.fp_str.__module__ == "_rl_accel"
    assert rl_accel.asciiBase85Encode.__module__ == "_rl_accel"


NAMES = ["Graduate 12", "João Conceição", "Zoë Œuvre-Ñúñez", "Graduate 7", "João Conceição", "Ана Петрова"]


def _render_all(names: list[str]) -> list[bytes]:
    return [
        render_certificate(name=name, course="Física", issued_at=ISSUED_AT, code="abc123", verification_url=URL)
        for name in names
    ]


def test_fonts_kept_between_documents_write_what_reportlab_writes(monkeypatch):
    """The font programs, widths and character maps kept from one certificate to the next (by the
    glyphs it uses) give the very bytes reportlab's own fonts give, whichever subsets came before:
    names in ASCII, with other Latin letters, and with letters Vera lacks."""
    monkeypatch.setattr(rl_config, "invariant", 1)  # no dates or random ids: documents compare byte for byte
    kept = _render_all(NAMES)
    assert kept[1] == kept[4] and kept[0] != kept[3], "the same certificate twice; another name"
    assert all(isinstance(pdfmetrics.getFont(name), pdf._Font) for name in (pdf.REGULAR, pdf.BOLD))
    for name in (pdf.REGULAR, pdf.BOLD):  # reportlab's own fonts under the same names
        monkeypatch.setitem(pdfmetrics._fonts, name, TTFont(name, str(pdf._FONTS / f"{name}.ttf")))
    assert _render_all(NAMES) == kept
