"""Partitioning a document into unstructured's elements.

Every format goes through unstructured's own partitioner for it, except PDF with the
fast strategy: unstructured's ``partition_pdf`` cannot be imported without
unstructured-inference (and so torch), so inferq runs the same pdfminer-based fast path
from unstructured's lower-level parts (the pdfminer page reader, the text classifier,
the reading-order sort and the common metadata post-processing).
"""

from __future__ import annotations

import email
import email.policy
import io
import logging
import re
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from typing import Any

from inferq.documents import formats, runtime
from inferq.documents.errors import DocumentError
from inferq.documents.settings import (
    HI_RES_INSTALL_HINT,
    check_partition_settings,
    hi_res_available,
)

logger = logging.getLogger(__name__)

Element = Any  # unstructured.documents.elements.Element (no type hints in unstructured)


def partition(
    filename: str, data: bytes, settings: Mapping[str, object]
) -> list[dict[str, object]]:
    """Partition one file with an ``unstructured_api`` partition node's settings.

    Returns element dicts as unstructured's ``elements_to_dicts`` writes them, with
    ``metadata.filename`` set to ``filename``. Raises DocumentError for an unsupported,
    corrupt or unparseable file, or bad settings.
    """
    options = check_partition_settings("unstructured_api", settings)
    filetype = formats.filetype_of(filename)
    if not data:
        raise DocumentError(f"{filename}: the file is empty")
    runtime.prepare()
    try:
        elements = _PARTITIONERS[filetype](filename, data, options)
    except DocumentError:
        raise
    except Exception as exc:
        raise DocumentError(
            f"{filename}: could not be partitioned ({type(exc).__name__}: {exc})"
        ) from exc
    return _finish(elements, options)


def _finish(elements: list[Element], options: Mapping[str, object]) -> list[dict[str, object]]:
    from unstructured.staging.base import elements_to_dicts

    excluded = options["exclude_elements"]
    assert isinstance(excluded, list)
    if excluded:
        elements = [e for e in elements if e.category not in excluded]
    dicts: list[dict[str, object]] = elements_to_dicts(elements)
    if not options["coordinates"]:
        for d in dicts:
            metadata = d.get("metadata")
            if isinstance(metadata, dict):
                metadata.pop("coordinates", None)
    return dicts


def _common(filename: str, options: Mapping[str, object]) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "metadata_filename": filename,
        "unique_element_ids": options["unique_element_ids"],
    }
    if options["languages"] is not None:
        kwargs["languages"] = options["languages"]
    return kwargs


def _encoding(options: Mapping[str, object]) -> str | None:
    encoding = options["encoding"]
    return encoding if isinstance(encoding, str) else None


def _text_file(
    partitioner: Callable[..., Any],
    filename: str,
    data: bytes,
    options: Mapping[str, object],
    **extra: Any,
) -> list[Element]:
    """The elements of a text format's partitioner, which reads the bytes in the
    ``encoding`` the settings name (None: it detects one)."""
    return list(
        partitioner(
            file=io.BytesIO(data),
            encoding=_encoding(options),
            **extra,
            **_common(filename, options),
        )
    )


def _text(filename: str, data: bytes, options: Mapping[str, object]) -> list[Element]:
    from unstructured.partition.text import partition_text

    return _text_file(partition_text, filename, data, options)


def _markdown(filename: str, data: bytes, options: Mapping[str, object]) -> list[Element]:
    from unstructured.partition.md import partition_md

    return _text_file(partition_md, filename, data, options)


def _html(filename: str, data: bytes, options: Mapping[str, object]) -> list[Element]:
    from unstructured.partition.html import partition_html

    return _text_file(partition_html, filename, data, options)


def _xml(filename: str, data: bytes, options: Mapping[str, object]) -> list[Element]:
    from unstructured.partition.xml import partition_xml

    keep_tags = bool(options["xml_keep_tags"])
    return _text_file(partition_xml, filename, data, options, xml_keep_tags=keep_tags)


def _csv(filename: str, data: bytes, options: Mapping[str, object]) -> list[Element]:
    from unstructured.partition.csv import partition_csv

    return _text_file(partition_csv, filename, data, options, infer_table_structure=True)


def _json(filename: str, data: bytes, options: Mapping[str, object]) -> list[Element]:
    from unstructured.partition.json import partition_json

    encoding = _encoding(options)
    text = data.decode(encoding) if encoding else data.decode("utf-8-sig")
    return list(partition_json(text=text, **_common(filename, options)))


def _email(filename: str, data: bytes, options: Mapping[str, object]) -> list[Element]:
    """The message body, then the elements of each attachment of a supported type.

    unstructured would hand attachments to its auto-partitioner, which has no PDF without
    unstructured-inference; inferq partitions them itself, as unstructured marks them:
    ``metadata.filename`` the attachment's name, ``attached_to_filename`` the message's.
    An attachment that cannot be partitioned is skipped (logged), as unstructured does.
    """
    from unstructured.partition.email import partition_email

    elements = list(
        partition_email(
            file=io.BytesIO(data), process_attachments=False, **_common(filename, options)
        )
    )
    message = email.message_from_bytes(data, policy=email.policy.default)
    container = filename.replace("\\", "/").rsplit("/", 1)[-1]
    for part in message.iter_attachments():
        name = part.get_filename()
        if not name or formats.extension(name) not in formats.SUPPORTED_TYPES:
            continue
        try:
            content = part.get_content()
            if isinstance(content, EmailMessage):
                content = content.as_bytes()
            elif isinstance(content, str):
                content = content.encode()
            attached = _PARTITIONERS[formats.filetype_of(name)](name, content, options)
        except Exception as exc:
            logger.warning("%s: skipping attachment %s: %s", filename, name, exc)
            continue
        for element in attached:
            element.metadata.attached_to_filename = container
        elements += attached
    return elements


def _docx(filename: str, data: bytes, options: Mapping[str, object]) -> list[Element]:
    from unstructured.partition.docx import partition_docx

    return list(
        partition_docx(
            file=io.BytesIO(data),
            include_page_breaks=bool(options["include_page_breaks"]),
            infer_table_structure=True,
            **_common(filename, options),
        )
    )


def _pdf(filename: str, data: bytes, options: Mapping[str, object]) -> list[Element]:
    strategy = options["strategy"]
    if strategy == "hi_res":
        return _pdf_hi_res(filename, data, options)
    elements = _pdf_fast(filename, data, options)
    if strategy == "auto" and not any(e.text.strip() for e in elements):
        # what unstructured's auto does for a PDF with no text layer: OCR with hi_res
        if hi_res_available():
            return _pdf_hi_res(filename, data, options)
        raise DocumentError(
            f"{filename}: the PDF has no text layer (a scan?); reading it needs OCR with "
            f"strategy 'hi_res': {HI_RES_INSTALL_HINT}"
        )
    return elements


def _pdf_hi_res(filename: str, data: bytes, options: Mapping[str, object]) -> list[Element]:
    if not hi_res_available():  # pragma: no cover - settings are checked first
        raise DocumentError(f"strategy 'hi_res' is not available: {HI_RES_INSTALL_HINT}")
    from unstructured.partition.pdf import partition_pdf  # pragma: no cover

    kinds = [str(k) for k in _as_list(options["extract_image_block_types"])]  # pragma: no cover
    return list(  # pragma: no cover
        partition_pdf(
            file=io.BytesIO(data),
            strategy="hi_res",
            include_page_breaks=bool(options["include_page_breaks"]),
            infer_table_structure=bool(
                options["pdf_infer_table_structure"] or options["infer_table_structure"]
            ),
            extract_image_block_types=kinds or None,
            extract_image_block_to_payload=bool(kinds),
            **_common(filename, options),
        )
    )


def _as_list(value: object) -> list[object]:
    return list(value) if isinstance(value, list) else []


def _pdf_fast(filename: str, data: bytes, options: Mapping[str, object]) -> list[Element]:
    from unstructured.documents.elements import PageBreak
    from unstructured.file_utils.model import FileType
    from unstructured.partition.common.metadata import apply_metadata
    from unstructured.partition.utils.constants import SORT_MODE_BASIC, SORT_MODE_XY_CUT
    from unstructured.partition.utils.sorting import sort_page_elements

    include_page_breaks = bool(options["include_page_breaks"])

    @apply_metadata(FileType.PDF)
    def partition_pdf_fast(
        file: io.BytesIO,
        metadata_filename: str,
        languages: list[str] | None = None,
        unique_element_ids: bool = False,
    ) -> list[Element]:
        elements: list[Element] = []
        for page_elements in _pdfminer_pages(file, languages):
            ordered = sort_page_elements(page_elements, SORT_MODE_BASIC)
            elements += sort_page_elements(ordered, SORT_MODE_XY_CUT)
            if include_page_breaks:
                elements.append(PageBreak(text=""))
        return elements

    return list(partition_pdf_fast(io.BytesIO(data), **_common(filename, options)))


def _pdfminer_pages(file: io.BytesIO, languages: list[str] | None) -> list[list[Element]]:
    """Text elements per page, as unstructured's fast strategy reads them with pdfminer."""
    from unstructured.cleaners.core import clean_extra_whitespace_with_index_run
    from unstructured.documents.coordinates import PixelSpace
    from unstructured.documents.elements import CoordinatesMetadata, ElementMetadata
    from unstructured.nlp.patterns import PARAGRAPH_PATTERN
    from unstructured.partition.pdf_image.pdfminer_utils import (
        get_text_with_deduplication,
        open_pdfminer_pages_generator,
        rect_to_bbox,
    )
    from unstructured.partition.text import element_from_text
    from unstructured.partition.utils.config import env_config

    pages: list[list[Element]] = []
    for page_number, (_page, layout) in enumerate(open_pdfminer_pages_generator(file), start=1):
        system = PixelSpace(width=layout.width, height=layout.height)
        page_elements: list[Element] = []
        for obj in layout:
            x1, y1, x2, y2 = rect_to_bbox(obj.bbox, layout.height)
            if hasattr(obj, "get_text"):
                snippets = [
                    get_text_with_deduplication(obj, env_config.PDF_CHAR_DUPLICATE_THRESHOLD)
                ]
            else:
                snippets = re.split(PARAGRAPH_PATTERN, _container_text(obj))
            for snippet in snippets:
                text, _moved = clean_extra_whitespace_with_index_run(snippet)
                if not text.strip():
                    continue
                points = ((x1, y1), (x1, y2), (x2, y2), (x2, y1))
                element = element_from_text(text, coordinates=points, coordinate_system=system)
                element.metadata = ElementMetadata(
                    page_number=page_number,
                    coordinates=CoordinatesMetadata(points=points, system=system),
                    languages=languages,
                )
                element.metadata.detection_origin = "pdfminer"
                page_elements.append(element)
        pages.append(page_elements)
    return pages


def _container_text(obj: Any) -> str:
    """The text of a pdfminer layout object that has no get_text (a figure, say)."""
    from pdfminer.layout import LTContainer

    if isinstance(obj, LTContainer):
        return "".join(_container_text(child) for child in obj)
    text = getattr(obj, "get_text", None)
    return text() if callable(text) else ""


_PARTITIONERS: dict[str, Callable[[str, bytes, Mapping[str, object]], list[Element]]] = {
    "text/plain": _text,
    "text/markdown": _markdown,
    "text/html": _html,
    "application/xml": _xml,
    "text/csv": _csv,
    "application/json": _json,
    "message/rfc822": _email,
    formats.PDF: _pdf,
    formats.DOCX: _docx,
}
