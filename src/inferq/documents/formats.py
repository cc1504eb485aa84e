"""Which files the document layer takes, and the quick check each gets at submission."""

from __future__ import annotations

import csv
import email
import email.policy
import io
import json
import zipfile
from collections.abc import Callable
from typing import Final

from inferq.documents.errors import DocumentError

PDF: Final = "application/pdf"
DOCX: Final = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"

# extension -> filetype (the MIME type unstructured writes to metadata.filetype)
SUPPORTED_TYPES: Final[dict[str, str]] = {
    ".txt": "text/plain",
    ".text": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".html": "text/html",
    ".htm": "text/html",
    ".xml": "application/xml",
    ".pdf": PDF,
    ".docx": DOCX,
    ".csv": "text/csv",
    ".json": "application/json",
    ".eml": "message/rfc822",
}

_TEXT_SNIFF_BYTES: Final = 64 * 1024
_PDF_HEADER_WINDOW: Final = 1024
_PDF_TRAILER_WINDOW: Final = 2048


def extension(filename: str) -> str:
    """The lower-cased extension of the last path component, with its dot ('' if none)."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    stem, dot, ext = name.rpartition(".")
    return f".{ext.lower()}" if dot and stem else ""


def filetype_of(filename: str) -> str:
    """The filetype for a supported file name; DocumentError otherwise."""
    ext = extension(filename)
    if ext not in SUPPORTED_TYPES:
        what = f"extension {ext!r}" if ext else "no extension"
        supported = " ".join(sorted(SUPPORTED_TYPES))
        raise DocumentError(
            f"{filename}: unsupported file type ({what}); supported extensions: {supported}"
        )
    return SUPPORTED_TYPES[ext]


def check_document(filename: str, data: bytes) -> str:
    """Validate an upload quickly: a supported type whose bytes look like that type.

    Returns the filetype. Raises DocumentError naming the file and the problem: an
    unsupported extension, an empty file, or bytes that are not a readable document of
    the type the extension says (a truncated PDF, a .docx that is not a Word package,
    invalid JSON, binary data in a text format, ...).
    """
    filetype = filetype_of(filename)
    if not data:
        raise DocumentError(f"{filename}: the file is empty")
    _CHECKS[filetype](filename, data)
    return filetype


def _fail(filename: str, problem: str, exc: BaseException | None = None) -> DocumentError:
    detail = f": {exc}" if exc is not None and str(exc) else ""
    return DocumentError(f"{filename}: {problem}{detail}")


def _check_text(filename: str, data: bytes) -> None:
    head = data[:_TEXT_SNIFF_BYTES]
    if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise _fail(filename, "is binary data, not text")


def _check_csv(filename: str, data: bytes) -> None:
    _check_text(filename, data)
    text = data.decode("utf-8", errors="replace")
    try:
        rows = [row for row in csv.reader(io.StringIO(text, newline="")) if row]
    except csv.Error as exc:
        raise _fail(filename, "is not valid CSV", exc) from exc
    if not rows:
        raise _fail(filename, "is a CSV file with no rows")


def _check_xml(filename: str, data: bytes) -> None:
    _check_text(filename, data)
    from lxml import etree

    # no DTD loading, no entity expansion, no network
    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise _fail(filename, "is not well-formed XML", exc) from exc


def _check_json(filename: str, data: bytes) -> None:
    try:
        json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise _fail(filename, "is not valid JSON", exc) from exc


def _check_email(filename: str, data: bytes) -> None:
    _check_text(filename, data)
    message = email.message_from_bytes(data, policy=email.policy.default)
    headers = {name.lower() for name in message}
    if not headers & {"from", "to", "subject", "date", "message-id"}:
        raise _fail(filename, "is not an email message (no From, To, Subject or Date header)")


def _check_pdf(filename: str, data: bytes) -> None:
    if b"%PDF-" not in data[:_PDF_HEADER_WINDOW]:
        raise _fail(filename, "is not a PDF (no %PDF- header)")
    if b"%%EOF" not in data[-_PDF_TRAILER_WINDOW:]:
        raise _fail(filename, "is a truncated or damaged PDF (no end-of-file marker)")
    from pypdf import PdfReader

    try:
        reader = PdfReader(io.BytesIO(data), strict=False)
        if reader.is_encrypted:
            raise _fail(filename, "is a password-protected PDF")
        pages = len(reader.pages)
    except DocumentError:
        raise
    except Exception as exc:
        raise _fail(filename, "is not a readable PDF", exc) from exc
    if pages == 0:
        raise _fail(filename, "is a PDF with no pages")


def _check_docx(filename: str, data: bytes) -> None:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as package:
            names = set(package.namelist())
            if "word/document.xml" not in names:
                raise _fail(filename, "is not a Word document (no word/document.xml)")
            bad = package.testzip()
            if bad is not None:
                raise _fail(filename, f"is a damaged Word document (corrupt member {bad})")
    except DocumentError:
        raise
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as exc:
        raise _fail(filename, "is not a Word document (not a valid .docx package)", exc) from exc
    import docx

    try:
        docx.Document(io.BytesIO(data))
    except Exception as exc:
        raise _fail(filename, "is not a readable Word document", exc) from exc


_CHECKS: Final[dict[str, Callable[[str, bytes], None]]] = {
    "text/plain": _check_text,
    "text/markdown": _check_text,
    "text/html": _check_text,
    "application/xml": _check_xml,
    "text/csv": _check_csv,
    "application/json": _check_json,
    "message/rfc822": _check_email,
    PDF: _check_pdf,
    DOCX: _check_docx,
}
