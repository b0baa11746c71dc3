"""Certificate PDFs, rendered with reportlab.

Text is set in Bitstream Vera (shipped with reportlab), so names such as
"João Conceição" (and the Portuguese texts) render as written; the verification
URL is printed and drawn as a QR code (zxing-cpp's encoder; one filled path). The texts are in the language asked for
(:mod:`services.i18n`), the issue date as that language writes it. Files given are embedded in
the document (readers show them as attachments): the signed credential travels in the PDF, so
the PDF alone proves what it says.
"""

from __future__ import annotations

import functools
import io
import itertools
import zlib
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import reportlab
import zxingcpp
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.pdfdoc import PDFArray, PDFDictionary, PDFName, PDFStream, PDFString
from reportlab.pdfbase.ttfonts import TTFont, TTFontFace
from reportlab.pdfgen import canvas

from services import i18n

_FONTS = Path(reportlab.__file__).parent / "fonts"
REGULAR, BOLD = "Vera", "VeraBd"


# reportlab embeds in each PDF a subset of each font: every ASCII glyph, and the document's other
# letters (``ã``, ``ç``, ...) in the order they first appear, so most certificates share their
# subsets. Making a subset's font program, deflating it and formatting its widths again for every
# page was half of a page's rendering (8.1 ms a page before, 3.8 after): the fonts below do each
# once per subset and process, and write the same bytes reportlab writes.
SUBSETS_KEPT = 64  # subsets kept a font: ≈ 46 KB each (the program as made and deflated)


class _Deflate:
    """reportlab's FlateDecode filter, remembering what it made for the data it was last given:
    the subsets' font programs (the same bytes object each time, see :class:`_Face`) and
    character maps."""

    pdfname = "FlateDecode"

    @staticmethod
    @functools.lru_cache(maxsize=4 * SUBSETS_KEPT)
    def encode(data: bytes | str) -> bytes:
        return zlib.compress(data.encode() if isinstance(data, str) else data)


class _Face(TTFontFace):
    """A TrueType face whose subsets' font programs are made and deflated once."""

    @functools.lru_cache(maxsize=SUBSETS_KEPT)  # noqa: B019 (two faces a process, kept for its life)
    def _program(self, subset: tuple[int, ...]) -> bytes:
        return super().makeSubset(list(subset))

    def makeSubset(self, subset: list[int]) -> bytes:
        return self._program(tuple(subset))

    def addSubsetObjects(self, doc, fontname, subset):
        descriptor = super().addSubsetObjects(doc, fontname, subset)
        if doc.compression:
            program = doc.idToObject[doc.idToObject[descriptor.name]["FontFile2"].name]
            program.filters = [_Deflate]
        return descriptor


class _Widths(PDFArray):
    """A subset's glyph widths (hundreds of numbers), formatted once per subset and process."""

    def format(self, document, IND=b"\n "):
        return _formatted(tuple(self.sequence))


@functools.lru_cache(maxsize=2 * SUBSETS_KEPT)
def _formatted(widths: tuple[int, ...]) -> bytes:
    return PDFArray(widths).format(None)  # numbers need nothing of the document


class _Font(TTFont):
    """A TrueType font with a :class:`_Face` (the file read again: once a process), its subsets'
    widths formatted and character maps deflated once."""

    def __init__(self, name: str, filename: str):
        super().__init__(name, filename)
        self.face = _Face(filename)

    def addObjects(self, doc):
        fonts = doc.idToObject["BasicFonts"].dict
        before = set(fonts)
        super().addObjects(doc)
        for name in fonts.keys() - before:
            font = fonts[name]
            font.Widths = _Widths(font.Widths.sequence)
            if doc.compression:
                doc.idToObject[font.ToUnicode.name].filters = [_Deflate]


def _register_fonts() -> None:
    for name in (REGULAR, BOLD):
        if name not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(_Font(name, str(_FONTS / f"{name}.ttf")))


QR_QUIET_ZONE = 4  # modules of white around the code, as the QR standard asks


def qr_modules(url: str) -> tuple[tuple[bool, ...], ...]:
    """The QR code of ``url`` (error correction L, the smallest version that holds it, of the eight
    mask patterns the one the standard's penalty rules score best), rows from the top, True where a
    module is dark. Encoded by zxing-cpp (its libzint, in C) in 0.3 ms; segno, in Python, took 5 to 8
    ms, most of it scoring the masks."""
    code = zxingcpp.create_barcode(url, zxingcpp.BarcodeFormat.QRCode, ec_level="L")
    image = code.to_image(scale=1, add_quiet_zones=False)  # one byte a module, 0 where dark
    height, width = image.shape[0], image.shape[1]
    pixels = bytes(image)
    return tuple(tuple(value < 128 for value in pixels[r * width : (r + 1) * width]) for r in range(height))


def _draw_qr(pdf: canvas.Canvas, url: str, x: float, y: float, size: float) -> None:
    """The QR code of ``url``, ``size`` wide with its quiet zone, lower left at ``(x, y)``: one
    filled path in module units (each row's runs of dark modules a rectangle), written as PDF
    operators: thousands of rectangles through reportlab's path object cost more than the rest of
    the page."""
    modules = qr_modules(url)
    box = size / (len(modules) + 2 * QR_QUIET_ZONE)
    runs = []
    for r, row in enumerate(modules):
        c = 0
        for dark, run in itertools.groupby(row):
            count = len(list(run))
            if dark:
                runs.append(f"{c} {r} {count} 1 re")
            c += count
    pdf.saveState()
    # the top left module at the origin, one module a unit, rows going down the page
    pdf.transform(box, 0, 0, -box, x + QR_QUIET_ZONE * box, y + size - QR_QUIET_ZONE * box)
    pdf.addLiteral("\n".join(runs) + "\nf")
    pdf.restoreState()


def render_certificate(
    *,
    name: str,
    course: str,
    issued_at: datetime,
    code: str,
    verification_url: str,
    revoked: bool = False,
    language: str = i18n.DEFAULT,
    files: Sequence[tuple[str, bytes]] = (),
) -> bytes:
    """The one-page certificate; ``files``: ``(filename, data)`` embedded in it."""
    _register_fonts()
    t = i18n.translations(language)
    buffer = io.BytesIO()
    width, height = landscape(A4)
    pdf = canvas.Canvas(buffer, pagesize=(width, height), pageCompression=1)
    pdf.setTitle(t.gettext("Certificate of completion — %(name)s") % {"name": name})
    pdf.setAuthor("mensageria")
    pdf.setSubject(course)

    pdf.setLineWidth(2)
    pdf.rect(12 * mm, 12 * mm, width - 24 * mm, height - 24 * mm)
    pdf.setFont(BOLD, 30)
    pdf.drawCentredString(width / 2, height - 45 * mm, t.gettext("Certificate of Completion"))
    pdf.setFont(REGULAR, 14)
    pdf.drawCentredString(width / 2, height - 65 * mm, t.gettext("This certifies that"))
    pdf.setFont(BOLD, 26)
    pdf.drawCentredString(width / 2, height - 82 * mm, name)
    pdf.setFont(REGULAR, 14)
    pdf.drawCentredString(width / 2, height - 97 * mm, t.gettext("has completed the course"))
    pdf.setFont(BOLD, 20)
    pdf.drawCentredString(width / 2, height - 112 * mm, course)
    pdf.setFont(REGULAR, 12)
    issued_on = t.gettext("Issued on %(date)s") % {"date": i18n.format_date(issued_at, language)}
    pdf.drawCentredString(width / 2, height - 127 * mm, issued_on)

    pdf.setFont(REGULAR, 9)
    pdf.drawString(22 * mm, 30 * mm, t.gettext("Verification code: %(code)s") % {"code": code})
    pdf.drawString(22 * mm, 24 * mm, t.gettext("Verify at: %(url)s") % {"url": verification_url})
    _draw_qr(pdf, verification_url, width - 56 * mm, 18 * mm, 32 * mm)
    if revoked:
        pdf.setFont(BOLD, 40)
        pdf.setFillColorRGB(0.8, 0, 0)
        pdf.drawCentredString(width / 2, height / 2 - 70 * mm, t.gettext("REVOKED"))
    pdf.showPage()
    _embed(pdf, files)
    pdf.save()
    return buffer.getvalue()


def _embed(pdf: canvas.Canvas, files: Sequence[tuple[str, bytes]]) -> None:
    """``files`` in the catalog's ``EmbeddedFiles`` name tree (ISO 32000-1, 7.11.4), written with
    the document: reading the finished PDF back to add them (pypdf) cost as much as rendering it."""
    if not files:
        return
    document = pdf._doc
    names = []
    for filename, data in sorted(files):  # a name tree's keys are sorted
        stream = PDFStream(
            PDFDictionary({"Type": PDFName("EmbeddedFile"), "Params": PDFDictionary({"Size": len(data)})}), data
        )
        spec = PDFDictionary(
            {
                "Type": PDFName("Filespec"),
                "F": PDFString(filename),
                "UF": PDFString(filename),
                "EF": PDFDictionary({"F": document.Reference(stream)}),
            }
        )
        names += [PDFString(filename), document.Reference(spec)]
    document.Catalog.Names = PDFDictionary({"EmbeddedFiles": PDFDictionary({"Names": PDFArray(names)})})
