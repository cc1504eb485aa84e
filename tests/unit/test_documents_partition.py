"""inferq.documents: checking and partitioning real documents built in memory."""

from __future__ import annotations

import io
import zipfile

import pytest

from inferq.documents import SUPPORTED_TYPES, DocumentError, check_document, partition, runtime
from tests import documents_samples as samples

FAST = {"strategy": "fast"}


def types_of(elements: list[dict[str, object]]) -> list[object]:
    return [e["type"] for e in elements]


def texts_of(elements: list[dict[str, object]]) -> str:
    return "\n".join(str(e["text"]) for e in elements)


def meta(element: dict[str, object]) -> dict[str, object]:
    metadata = element["metadata"]
    assert isinstance(metadata, dict)
    return metadata


def test_supported_types_cover_the_workflow_formats() -> None:
    for ext in (".txt", ".md", ".html", ".htm", ".pdf", ".docx", ".csv", ".json", ".eml"):
        assert ext in SUPPORTED_TYPES
    assert SUPPORTED_TYPES[".pdf"] == "application/pdf"
    assert SUPPORTED_TYPES[".eml"] == "message/rfc822"


def test_supported_types_are_the_filetypes_unstructured_writes() -> None:
    runtime.prepare()  # before unstructured's first import: its telemetry off
    from unstructured.file_utils.model import FileType

    for ext, mime in SUPPORTED_TYPES.items():
        file_type = FileType.from_mime_type(mime)
        assert file_type is not None, ext
        assert file_type.mime_type == mime, ext


@pytest.mark.parametrize("sample", samples.all_samples(), ids=lambda s: s[0])
def test_every_sample_passes_the_check_and_partitions(sample: tuple[str, bytes]) -> None:
    filename, data = sample
    filetype = check_document(filename, data)
    assert filetype == SUPPORTED_TYPES["." + filename.rsplit(".", 1)[1]]
    elements = partition(filename, data, FAST)
    assert elements
    for element in elements:
        assert set(element) >= {"type", "element_id", "text", "metadata"}
        assert meta(element)["filename"] == filename
        assert meta(element)["filetype"] == filetype
        assert isinstance(element["element_id"], str) and len(element["element_id"]) == 32


def test_text_gives_a_title_and_narrative_text() -> None:
    elements = partition(*samples.text_file(), FAST)
    assert types_of(elements) == ["Title", "NarrativeText", "NarrativeText"]
    assert elements[0]["text"] == samples.TITLE
    assert elements[1]["text"] == samples.PARAGRAPH
    assert meta(elements[1])["parent_id"] == elements[0]["element_id"]
    assert meta(elements[1])["languages"] == ["eng"]


def test_markdown_gives_titles_narrative_text_and_list_items() -> None:
    elements = partition(*samples.markdown_file(), FAST)
    assert types_of(elements) == [
        "Title",
        "NarrativeText",
        "Title",
        "NarrativeText",
        "ListItem",
        "ListItem",
    ]
    assert [e["text"] for e in elements if e["type"] == "Title"] == [samples.TITLE, "Details"]


def test_html_gives_title_narrative_text_and_a_table_with_html() -> None:
    elements = partition(*samples.html_file(), FAST)
    assert types_of(elements) == ["Title", "NarrativeText", "Title", "NarrativeText", "Table"]
    table = elements[-1]
    assert "alpha" in str(table["text"])
    assert "<table>" in str(meta(table)["text_as_html"])


def test_pdf_gives_text_with_page_numbers() -> None:
    elements = partition(*samples.pdf_file(), FAST)
    assert types_of(elements) == ["Title", "NarrativeText", "NarrativeText"]
    assert elements[0]["text"] == samples.TITLE
    assert elements[1]["text"] == samples.PARAGRAPH
    assert elements[2]["text"] == samples.PAGE_TWO_TEXT
    assert [meta(e)["page_number"] for e in elements] == [1, 1, 2]
    assert all("coordinates" not in meta(e) for e in elements)


def test_pdf_auto_uses_the_text_layer() -> None:
    fast = partition(*samples.pdf_file(), FAST)
    auto = partition(*samples.pdf_file(), {"strategy": "auto"})
    assert auto == fast


def test_pdf_coordinates_when_asked() -> None:
    elements = partition(*samples.pdf_file(), {"coordinates": True})
    coordinates = meta(elements[0])["coordinates"]
    assert isinstance(coordinates, dict)
    assert len(coordinates["points"]) == 4
    assert coordinates["system"] == "PixelSpace"


def test_docx_gives_title_text_and_table() -> None:
    elements = partition(*samples.docx_file(), FAST)
    assert types_of(elements) == ["Title", "NarrativeText", "Table", "NarrativeText"]
    assert "beta" in str(elements[2]["text"])
    assert "<table>" in str(meta(elements[2])["text_as_html"])


def test_email_gives_body_text_and_headers() -> None:
    elements = partition(*samples.email_file(), FAST)
    assert texts_of(elements) == samples.EMAIL_BODY
    metadata = meta(elements[0])
    assert metadata["subject"] == "Nightly batch summary"
    assert metadata["sent_from"] == ["Ops Bot <ops@example.com>"]
    assert metadata["sent_to"] == ["team@example.com"]


def test_email_attachments_are_partitioned_too() -> None:
    elements = partition(*samples.email_with_attachments_file(), FAST)
    body = [e for e in elements if "attached_to_filename" not in meta(e)]
    attached = [e for e in elements if "attached_to_filename" in meta(e)]
    assert texts_of(body) == samples.EMAIL_BODY
    assert all(meta(e)["filename"] == "with-attachments.eml" for e in body)
    assert {meta(e)["attached_to_filename"] for e in attached} == {"with-attachments.eml"}
    assert [(meta(e)["filename"], e["type"]) for e in attached] == [
        ("report.pdf", "Title"),
        ("report.pdf", "NarrativeText"),
        ("report.pdf", "NarrativeText"),
        ("jobs.csv", "Table"),
    ]
    assert [meta(e).get("page_number") for e in attached] == [1, 1, 2, None]


def test_csv_gives_one_table() -> None:
    elements = partition(*samples.csv_file(), FAST)
    assert types_of(elements) == ["Table"]
    assert "alpha 12 done" in str(elements[0]["text"])
    assert str(meta(elements[0])["text_as_html"]).count("<tr>") == 3


def test_json_gives_one_element_per_record() -> None:
    elements = partition(*samples.json_file(), FAST)
    assert len(elements) == 2
    assert "first record" in str(elements[0]["text"])
    assert "second record" in str(elements[1]["text"])


def test_element_ids_are_deterministic() -> None:
    first = partition(*samples.html_file(), FAST)
    second = partition(*samples.html_file(), FAST)
    assert [e["element_id"] for e in first] == [e["element_id"] for e in second]
    renamed = partition("other.html", samples.html_file()[1], FAST)
    assert renamed[0]["element_id"] != first[0]["element_id"]


def test_unique_element_ids_setting_gives_fresh_ids() -> None:
    first = partition(*samples.text_file(), {"unique_element_ids": True})
    second = partition(*samples.text_file(), {"unique_element_ids": True})
    assert first[0]["element_id"] != second[0]["element_id"]


def test_exclude_elements_drops_those_types() -> None:
    elements = partition(*samples.markdown_file(), {"exclude_elements": ["ListItem", "title"]})
    assert types_of(elements) == ["NarrativeText", "NarrativeText"]


def test_include_page_breaks_for_pdf_and_docx() -> None:
    without = partition(*samples.pdf_file(), FAST)
    assert "PageBreak" not in types_of(without)
    with_breaks = partition(*samples.pdf_file(), {"include_page_breaks": True})
    assert types_of(with_breaks) == [
        "Title",
        "NarrativeText",
        "PageBreak",
        "NarrativeText",
        "PageBreak",
    ]


def test_encoding_setting_decodes_text() -> None:
    filename, data = samples.latin1_text_file()
    elements = partition(filename, data, {"encoding": "latin-1"})
    assert "Café résumé" in texts_of(elements)
    assert "Ça coûte très peu." in texts_of(elements)


def test_languages_setting_is_written_to_metadata() -> None:
    elements = partition(*samples.text_file(), {"languages": ["deu"]})
    assert all(meta(e)["languages"] == ["deu"] for e in elements)


def test_ocr_languages_stand_in_for_languages() -> None:
    elements = partition(*samples.text_file(), {"ocr_languages": ["fra"]})
    assert all(meta(e)["languages"] == ["fra"] for e in elements)


def test_xml_keep_tags() -> None:
    data = b"<records><record><name>alpha</name></record></records>"
    plain = partition("data.xml", data, {})
    tagged = partition("data.xml", data, {"xml_keep_tags": True})
    assert "alpha" in texts_of(plain) and "<name>" not in texts_of(plain)
    assert "<name>alpha</name>" in texts_of(tagged)


# -- rejected files ----------------------------------------------------------------------------


def truncated_pdf() -> bytes:
    data = samples.pdf_file()[1]
    return data[: len(data) // 2]


def not_a_docx() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as package:
        package.writestr("hello.txt", "not a word document")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("filename", "data", "problem"),
    [
        ("archive.zip", b"PK\x03\x04", "unsupported file type (extension '.zip')"),
        ("README", b"hello", "unsupported file type (no extension)"),
        ("empty.txt", b"", "the file is empty"),
        ("report.pdf", truncated_pdf(), "truncated or damaged PDF"),
        ("report.pdf", b"just some text, no pdf", "is not a PDF"),
        ("report.docx", b"garbage bytes that are no zip", "is not a Word document"),
        ("report.docx", not_a_docx(), "no word/document.xml"),
        ("records.json", b'{"id": 1,', "is not valid JSON"),
        ("data.xml", b"<records><record></records>", "is not well-formed XML"),
        ("notes.txt", b"\x00\x01\x02binary", "is binary data, not text"),
        ("summary.eml", b"just a line of text\n", "is not an email message"),
    ],
)
def test_check_document_rejects_with_a_named_problem(
    filename: str, data: bytes, problem: str
) -> None:
    with pytest.raises(DocumentError) as caught:
        check_document(filename, data)
    assert str(caught.value).startswith(f"{filename}: ")
    assert problem in str(caught.value)


def test_partition_of_a_corrupt_pdf_is_a_document_error() -> None:
    data = samples.pdf_file()[1]
    corrupt = data[:200] + b"\x00garbage" * 50
    with pytest.raises(DocumentError, match=r"^report\.pdf: could not be partitioned"):
        partition("report.pdf", corrupt, FAST)


def test_partition_of_a_garbage_docx_is_a_document_error() -> None:
    with pytest.raises(DocumentError, match=r"^report\.docx: could not be partitioned"):
        partition("report.docx", b"garbage bytes that are no zip", FAST)


def test_partition_of_invalid_json_is_a_document_error() -> None:
    with pytest.raises(DocumentError, match=r"^records\.json: could not be partitioned"):
        partition("records.json", b'{"id": 1,', FAST)


def test_partition_of_an_unsupported_file_is_a_document_error() -> None:
    with pytest.raises(DocumentError, match="unsupported file type"):
        partition("slides.pptx", b"PK", FAST)


def test_pdf_with_no_text_layer_under_auto_says_it_needs_ocr() -> None:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 50, 50, style="F")
    data = bytes(pdf.output())
    assert partition("scan.pdf", data, FAST) == []
    with pytest.raises(DocumentError, match=r"^scan\.pdf: the PDF has no text layer.*hi_res"):
        partition("scan.pdf", data, {"strategy": "auto"})
