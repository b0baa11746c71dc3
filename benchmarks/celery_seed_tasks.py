"""Baseline (f): the seed's architecture — three Celery tasks per course completion, chained.

Registered on (b)'s app, :data:`benchmarks.celery_app.app` (the worker is started with
``-I benchmarks.celery_seed_tasks``), on the same tables and engine settings:

1. ``bench.apply_status_change`` — (b)'s task: the student becomes ``completed``;
2. ``bench.render_certificate`` — a one-page certificate PDF rendered with reportlab as ours is
   (A4 landscape, a border, the Vera fonts reportlab ships, the verification URL printed and drawn
   as a QR code), stored with the certificate's row in ``bench_certificates``;
3. ``bench.mail_certificate`` — a mail with that PDF attached, sent over SMTP to the benchmark's
   sink on ``127.0.0.1:BENCH_SMTP_PORT`` (one connection per mail, as Django's ``send_mail``).

    chain(apply_status_change.si(request_id, student_id, "completed", "course completed"),
          render_certificate.si(code, student_id, name, email, course),
          mail_certificate.si(code)).apply_async()
"""

from __future__ import annotations

import io
import os
import smtplib
from datetime import UTC, datetime
from email.message import EmailMessage
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
from sqlalchemy import DateTime, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from benchmarks.celery_app import Base, Session, app

MAIL_FROM = "mensageria <no-reply@mensageria.local>"
VERIFY_URL = "http://127.0.0.1:8000/certificates/"
FONTS = Path(reportlab.__file__).parent / "fonts"


class BenchCertificate(Base):
    __tablename__ = "bench_certificates"

    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    student_id: Mapped[int] = mapped_column(Integer, index=True)
    student_name: Mapped[str] = mapped_column(String(200))
    student_email: Mapped[str] = mapped_column(String(320))
    course: Mapped[str] = mapped_column(String(200))
    issued_at: Mapped[datetime] = mapped_column(DateTime)
    pdf: Mapped[bytes] = mapped_column(LargeBinary)


def certificate_pdf(name: str, course: str, code: str, issued_at: datetime) -> bytes:
    """One page, as ``services/_certificates/pdf.py`` lays it out (without its translations)."""
    for font in ("Vera", "VeraBd"):
        if font not in pdfmetrics.getRegisteredFontNames():
            pdfmetrics.registerFont(TTFont(font, str(FONTS / f"{font}.ttf")))
    url = VERIFY_URL + code
    buffer = io.BytesIO()
    width, height = landscape(A4)
    pdf = canvas.Canvas(buffer, pagesize=(width, height), pageCompression=1)
    pdf.setTitle(f"Certificate of completion — {name}")
    pdf.setLineWidth(2)
    pdf.rect(12 * mm, 12 * mm, width - 24 * mm, height - 24 * mm)
    lines = [
        ("VeraBd", 30, 45, "Certificate of Completion"),
        ("Vera", 14, 65, "This certifies that"),
        ("VeraBd", 26, 82, name),
        ("Vera", 14, 97, "has completed the course"),
        ("VeraBd", 20, 112, course),
        ("Vera", 12, 127, f"Issued on {issued_at:%B %d, %Y}"),
    ]
    for font, size, drop, text in lines:
        pdf.setFont(font, size)
        pdf.drawCentredString(width / 2, height - drop * mm, text)
    pdf.setFont("Vera", 9)
    pdf.drawString(22 * mm, 30 * mm, f"Verification code: {code}")
    pdf.drawString(22 * mm, 24 * mm, f"Verify at: {url}")
    widget = QrCodeWidget(url)
    x0, y0, x1, y1 = widget.getBounds()
    size = 32 * mm
    qr = Drawing(size, size, transform=[size / (x1 - x0), 0, 0, size / (y1 - y0), 0, 0])
    qr.add(widget)
    renderPDF.draw(qr, pdf, width - 56 * mm, 18 * mm)
    pdf.showPage()
    pdf.save()
    return buffer.getvalue()


@app.task(name="bench.render_certificate")
def render_certificate(code: str, student_id: int, name: str, email: str, course: str) -> None:
    issued_at = datetime.now(UTC).replace(tzinfo=None)
    document = certificate_pdf(name, course, code, issued_at)
    with Session.begin() as session:
        session.add(
            BenchCertificate(
                code=code,
                student_id=student_id,
                student_name=name,
                student_email=email,
                course=course,
                issued_at=issued_at,
                pdf=document,
            )
        )


@app.task(name="bench.mail_certificate")
def mail_certificate(code: str) -> None:
    with Session() as session:
        certificate = session.get(BenchCertificate, code)
        message = EmailMessage()
        message["From"] = MAIL_FROM
        message["To"] = certificate.student_email
        message["Subject"] = f"Your certificate for {certificate.course}"
        message.set_content(f"Hello {certificate.student_name},\n\nverify your certificate at {VERIFY_URL}{code}\n")
        message.add_attachment(
            certificate.pdf, maintype="application", subtype="pdf", filename=f"certificate-{code}.pdf"
        )
    with smtplib.SMTP("127.0.0.1", int(os.environ["BENCH_SMTP_PORT"]), timeout=10) as smtp:
        smtp.send_message(message)
