"""Files carried inside a certificate's PDF (PDF embedded files, shown by readers as attachments).

The signed credential travels in the PDF, so the PDF alone proves what it says::

    document = embed(render_certificate(...), "certificate-CODE.jwt", token.encode())
"""

from __future__ import annotations

import io

from pypdf import PdfReader, PdfWriter


def embed(document: bytes, filename: str, data: bytes) -> bytes:
    """``document`` with ``data`` attached as ``filename``."""
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(document)))
    writer.add_attachment(filename, data)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()
