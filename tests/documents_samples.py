"""Small real documents built in memory for the document-processing tests.

Every builder returns ``(filename, bytes)``. The PDF is written by fpdf2, the DOCX by
python-docx, the email by the standard library's ``email`` package: real files that the
partitioners parse the same way they would parse a user's upload. Nothing here reads or
writes the disk or the network.
"""

from __future__ import annotations

import io
import json
from email.message import EmailMessage

TITLE = "Quarterly Report"
PARAGRAPH = (
    "The inferq service processed every queued job in strict priority order. "
    "Workers claimed each task from the durable store and wrote its result."
)
SECOND_PARAGRAPH = (
    "Document workflows split uploaded files into elements. "
    "Each element carries its text and the metadata that locates it in the file."
)
PAGE_TWO_TEXT = (
    "The second page explains how the runner resumes after a crash. "
    "Finished node outputs are kept and the rest of the job runs again."
)
EMAIL_BODY = (
    "Hello team, the nightly batch finished without errors. "
    "Please review the attached summary before the planning meeting."
)
CSV_ROWS = [["name", "jobs", "status"], ["alpha", "12", "done"], ["beta", "7", "running"]]


def text_file() -> tuple[str, bytes]:
    body = f"{TITLE}\n\n{PARAGRAPH}\n\n{SECOND_PARAGRAPH}\n"
    return "notes.txt", body.encode()


def latin1_text_file() -> tuple[str, bytes]:
    """Text in ISO-8859-1: only decodes right when the encoding setting says so."""
    body = f"Café résumé\n\n{PARAGRAPH} Ça coûte très peu.\n"
    return "latin1.txt", body.encode("latin-1")


def markdown_file() -> tuple[str, bytes]:
    body = (
        f"# {TITLE}\n\n"
        f"{PARAGRAPH}\n\n"
        "## Details\n\n"
        f"{SECOND_PARAGRAPH}\n\n"
        "- first point of the list\n"
        "- second point of the list\n"
    )
    return "report.md", body.encode()


def html_file() -> tuple[str, bytes]:
    body = (
        "<!DOCTYPE html><html><head><title>Report</title></head><body>"
        f"<h1>{TITLE}</h1>"
        f"<p>{PARAGRAPH}</p>"
        "<h2>Details</h2>"
        f"<p>{SECOND_PARAGRAPH}</p>"
        "<table><tr><th>name</th><th>jobs</th></tr><tr><td>alpha</td><td>12</td></tr></table>"
        "</body></html>"
    )
    return "page.html", body.encode()


def pdf_file() -> tuple[str, bytes]:
    """A two-page PDF: a heading and a paragraph on page 1, a paragraph on page 2."""
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_auto_page_break(auto=False)
    pdf.add_page()
    pdf.set_y(50)
    pdf.set_font("Helvetica", style="B", size=20)
    pdf.cell(0, 12, TITLE, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(6)
    pdf.set_font("Helvetica", size=11)
    pdf.multi_cell(0, 5, PARAGRAPH)
    pdf.add_page()
    pdf.set_y(50)
    pdf.set_font("Helvetica", size=11)
    pdf.multi_cell(0, 5, PAGE_TWO_TEXT)
    return "report.pdf", bytes(pdf.output())


def docx_file() -> tuple[str, bytes]:
    import docx

    document = docx.Document()
    document.add_heading(TITLE, level=1)
    document.add_paragraph(PARAGRAPH)
    table = document.add_table(rows=len(CSV_ROWS), cols=len(CSV_ROWS[0]))
    for r, row in enumerate(CSV_ROWS):
        for c, value in enumerate(row):
            table.cell(r, c).text = value
    document.add_paragraph(SECOND_PARAGRAPH)
    buffer = io.BytesIO()
    document.save(buffer)
    return "report.docx", buffer.getvalue()


def email_file() -> tuple[str, bytes]:
    message = EmailMessage()
    message["From"] = "Ops Bot <ops@example.com>"
    message["To"] = "team@example.com"
    message["Subject"] = "Nightly batch summary"
    message["Date"] = "Tue, 04 Nov 2025 08:30:00 +0000"
    message["Message-ID"] = "<summary-1@example.com>"
    message.set_content(EMAIL_BODY)
    return "summary.eml", message.as_bytes()


def email_with_attachments_file() -> tuple[str, bytes]:
    """An email with an HTML alternative body, a PDF and a CSV attached, and a .bin file
    (a type inferq does not partition)."""
    message = EmailMessage()
    message["From"] = "ops@example.com"
    message["To"] = "team@example.com"
    message["Subject"] = "Report attached"
    message.set_content(EMAIL_BODY)
    message.add_alternative(f"<html><body><p>{EMAIL_BODY}</p></body></html>", subtype="html")
    pdf_name, pdf = pdf_file()
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename=pdf_name)
    csv_name, csv = csv_file()
    message.add_attachment(csv, maintype="text", subtype="csv", filename=csv_name)
    message.add_attachment(
        b"\x00\x01", maintype="application", subtype="octet-stream", filename="blob.bin"
    )
    return "with-attachments.eml", message.as_bytes()


def csv_file() -> tuple[str, bytes]:
    body = "\n".join(",".join(row) for row in CSV_ROWS) + "\n"
    return "jobs.csv", body.encode()


def json_file() -> tuple[str, bytes]:
    body = json.dumps([{"id": 1, "note": "first record"}, {"id": 2, "note": "second record"}])
    return "records.json", body.encode()


def all_samples() -> list[tuple[str, bytes]]:
    """One document of every supported kind."""
    return [
        text_file(),
        markdown_file(),
        html_file(),
        pdf_file(),
        docx_file(),
        email_file(),
        csv_file(),
        json_file(),
    ]
