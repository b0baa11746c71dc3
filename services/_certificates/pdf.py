"""Certificate PDFs, rendered with reportlab.

Text is set in Bitstream Vera (shipped with reportlab), so names such as
"João Conceição" (and the Portuguese texts) render as written; the verification
URL is printed and drawn as a QR code. The texts are in the language asked for
(:mod:`services.i18n`), the issue date as that language writes it.
"""

from __future__ import annotations

import io
from datetime import datetime
from pathlib import Path

import reportlab
from reportlab.graphics import renderPDF
from reportlab.graphics.barcode.qr import QrCodeWidget
from reportlab.graphics.shapes import Drawing
from reportlab.lib.pagesizes import A4, landscape
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen import canvas

from services import i18n

_FONTS = Path(reportlab.__file__).parent / "fonts"
REGULAR, BOLD = "Vera", "VeraBd"


def _register_fonts() -> None:
    for name in (REGULAR, BOLD):
        if name not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(name, str(_FONTS / f"{name}.ttf")))


def _qr(url: str, size: float) -> Drawing:
    widget = QrCodeWidget(url)
    x0, y0, x1, y1 = widget.getBounds()
    drawing = Drawing(size, size, transform=[size / (x1 - x0), 0, 0, size / (y1 - y0), 0, 0])
    drawing.add(widget)
    return drawing


def render_certificate(
    *,
    name: str,
    course: str,
    issued_at: datetime,
    code: str,
    verification_url: str,
    revoked: bool = False,
    language: str = i18n.DEFAULT,
) -> bytes:
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
    renderPDF.draw(_qr(verification_url, 32 * mm), pdf, width - 56 * mm, 18 * mm)
    if revoked:
        pdf.setFont(BOLD, 40)
        pdf.setFillColorRGB(0.8, 0, 0)
        pdf.drawCentredString(width / 2, height / 2 - 70 * mm, t.gettext("REVOKED"))
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()
