"""A consult report as a printable PDF, written directly (PDF 1.4, the standard Helvetica fonts).

No layout engine is needed for a one-column text report: lines are wrapped to the page width by an
estimate of Helvetica's average glyph width, pages break as they fill, and text is restricted to
WinAnsi (Windows-1252), which the standard fonts encode (anything else becomes ``?``).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence

PAGE_WIDTH, PAGE_HEIGHT = 595, 842  # A4 in points
MARGIN = 56
LEADING = 14
WRAP = 92  # characters per 10.5 pt line within the margins


def _escape(text: str) -> str:
    encodable = text.encode("cp1252", errors="replace").decode("cp1252")
    return encodable.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _lines(blocks: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """(style, text) per output line; style ``h`` is a heading, ``t`` body text, ``s`` a blank line."""
    out: list[tuple[str, str]] = []
    for style, text in blocks:
        if style == "h":
            out += [("s", ""), ("h", text)]
            continue
        for paragraph in text.splitlines() or [""]:
            wrapped = textwrap.wrap(paragraph, WRAP) or [""]
            out += [("t", line) for line in wrapped]
    return out


def render_pdf(title: str, blocks: Sequence[tuple[str, str]]) -> bytes:
    """A PDF of ``title`` and ``blocks`` (``("h", heading)`` or ``("t", text)``)."""
    per_page = (PAGE_HEIGHT - 2 * MARGIN) // LEADING - 2
    lines = _lines(blocks)
    pages = [lines[i : i + per_page] for i in range(0, max(len(lines), 1), per_page)] or [[]]
    objects: list[bytes] = []

    def add(body: bytes) -> int:
        objects.append(body)
        return len(objects)

    catalog = add(b"")  # filled in below, once the pages object number is known
    pages_id = add(b"")
    regular = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>")
    bold = add(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>")
    page_ids = []
    for number, page in enumerate(pages, start=1):
        y = PAGE_HEIGHT - MARGIN
        ops = [f"BT /F2 14 Tf {MARGIN} {y} Td ({_escape(title)}) Tj ET"]
        y -= 2 * LEADING
        for style, text in page:
            if style != "s":
                font = "/F2 11" if style == "h" else "/F1 10.5"
                ops.append(f"BT {font} Tf {MARGIN} {y} Td ({_escape(text)}) Tj ET")
            y -= LEADING
        ops.append(f"BT /F1 8 Tf {MARGIN} {MARGIN // 2} Td (Page {number} of {len(pages)}) Tj ET")
        stream = "\n".join(ops).encode("cp1252")
        content = add(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
        page_ids.append(
            add(
                (
                    f"<< /Type /Page /Parent {pages_id} 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] "
                    f"/Resources << /Font << /F1 {regular} 0 R /F2 {bold} 0 R >> >> "
                    f"/Contents {content} 0 R >>"
                ).encode()
            )
        )
    objects[catalog - 1] = f"<< /Type /Catalog /Pages {pages_id} 0 R >>".encode()
    kids = " ".join(f"{i} 0 R" for i in page_ids)
    objects[pages_id - 1] = f"<< /Type /Pages /Kids [{kids}] /Count {len(page_ids)} >>".encode()
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for index, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % index + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        catalog,
        xref,
    )
    return bytes(out)
