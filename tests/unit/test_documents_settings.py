"""inferq.documents: partition and chunk node settings, normalised or rejected by name."""

from __future__ import annotations

import pytest

from inferq.documents import (
    DocumentError,
    check_chunk_settings,
    check_partition_settings,
    hi_res_available,
)
from inferq.documents import settings as settings_module


def test_partition_defaults() -> None:
    assert check_partition_settings("unstructured_api", {}) == {
        "strategy": "auto",
        "include_page_breaks": False,
        "pdf_infer_table_structure": False,
        "infer_table_structure": False,
        "exclude_elements": [],
        "xml_keep_tags": False,
        "encoding": None,
        "languages": None,
        "extract_image_block_types": [],
        "coordinates": False,
        "unique_element_ids": False,
    }


def test_partition_settings_are_normalised() -> None:
    out = check_partition_settings(
        "unstructured_api",
        {
            "strategy": "FAST",
            "include_page_breaks": True,
            "exclude_elements": ["title", "PageBreak"],
            "encoding": "LATIN-1",
            "ocr_languages": ["eng", "chi_sim"],
            "extract_image_block_types": ["image", "TABLE"],
            "coordinates": True,
            "xml_keep_tags": None,
            "unstructured_api_url": "https://example.invalid",
        },
    )
    assert out["strategy"] == "fast"
    assert out["include_page_breaks"] is True
    assert out["exclude_elements"] == ["Title", "PageBreak"]
    assert out["encoding"] == "iso8859-1"
    assert out["languages"] == ["eng", "chi_sim"]
    assert out["extract_image_block_types"] == ["Image", "Table"]
    assert out["coordinates"] is True
    assert out["xml_keep_tags"] is False


def test_languages_win_over_ocr_languages() -> None:
    out = check_partition_settings(
        "unstructured_api", {"languages": ["deu"], "ocr_languages": ["fra"]}
    )
    assert out["languages"] == ["deu"]


def test_the_platform_exclude_elements_values_are_all_known() -> None:
    documented = [
        "Address",
        "EmailAddress",
        "FigureCaption",
        "Footer",
        "Formula",
        "Header",
        "Image",
        "ListItem",
        "NarrativeText",
        "PageBreak",
        "Table",
        "Title",
        "UncategorizedText",
    ]
    out = check_partition_settings("unstructured_api", {"exclude_elements": documented})
    assert out["exclude_elements"] == documented


def test_element_types_cover_what_unstructured_emits() -> None:
    from inferq.documents import runtime

    runtime.prepare()
    from unstructured.documents.elements import TYPE_TO_TEXT_ELEMENT_MAP

    # the map also holds layout-model labels with dashes (Page-header); element types are
    # the class names it maps to
    emitted = {cls.__name__ for cls in TYPE_TO_TEXT_ELEMENT_MAP.values()}
    emitted = {"UncategorizedText" if n == "Text" else n for n in emitted} | {"Text"}
    missing = emitted - settings_module.ELEMENT_TYPES
    assert not missing


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"strategy": "ocr_only"}, "setting 'strategy' must be one of fast, auto, hi_res"),
        ({"strategy": 3}, "setting 'strategy' must be one of"),
        ({"include_page_breaks": "yes"}, "setting 'include_page_breaks' must be true or false"),
        ({"coordinates": 1}, "setting 'coordinates' must be true or false"),
        ({"exclude_elements": ["Paragraphs"]}, "unknown element type 'Paragraphs'"),
        ({"exclude_elements": [1]}, "setting 'exclude_elements' must be a list of strings"),
        ({"encoding": "no-such-codec"}, "setting 'encoding': unknown encoding 'no-such-codec'"),
        ({"encoding": 8}, "setting 'encoding' must be an encoding name"),
        ({"languages": ["xx-klingon"]}, "setting 'languages': unknown language code"),
        ({"ocr_languages": ["eng+zz"]}, "setting 'ocr_languages': unknown language code"),
        ({"extract_image_block_types": ["Chart"]}, "'Chart' is not one of Image, Table"),
        ({"chunk_size": 3}, "unknown partition setting 'chunk_size'"),
        ({"bogus": None}, "unknown partition setting 'bogus'"),
    ],
)
def test_bad_partition_settings_are_named(settings: dict[str, object], problem: str) -> None:
    with pytest.raises(DocumentError) as caught:
        check_partition_settings("unstructured_api", settings)
    assert problem in str(caught.value)


def test_hi_res_without_the_layout_model_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings_module, "hi_res_available", lambda: False)
    with pytest.raises(DocumentError) as caught:
        check_partition_settings("unstructured_api", {"strategy": "hi_res"})
    message = str(caught.value)
    assert "hi_res" in message
    assert "unstructured[pdf]" in message
    assert "tesseract" in message


def test_hi_res_accepted_when_the_layout_model_is_there(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings_module, "hi_res_available", lambda: True)
    out = check_partition_settings("unstructured_api", {"strategy": "hi_res"})
    assert out["strategy"] == "hi_res"


def test_hi_res_is_not_available_here() -> None:
    # no unstructured-inference in the default install (it would bring torch)
    import importlib.util

    if importlib.util.find_spec("unstructured_inference") is None:
        assert hi_res_available() is False


def test_vlm_needs_a_vision_model() -> None:
    with pytest.raises(DocumentError, match="vlm partitioning needs a vision model"):
        check_partition_settings("vlm", {"provider": "openai"})


def test_unknown_partition_subtype() -> None:
    with pytest.raises(DocumentError, match="unknown partition subtype 'magic'"):
        check_partition_settings("magic", {})


# -- chunk settings ----------------------------------------------------------------------------


def test_chunk_defaults_per_subtype() -> None:
    assert check_chunk_settings("chunk_by_title", {}) == {
        "max_characters": 500,
        "new_after_n_chars": None,
        "overlap": 0,
        "overlap_all": False,
        "combine_text_under_n_chars": None,
        "include_orig_elements": False,
        "multipage_sections": True,
    }
    assert check_chunk_settings("chunk_by_similarity", {})["similarity_threshold"] == 0.5
    assert "combine_text_under_n_chars" not in check_chunk_settings("chunk_by_character", {})
    assert "multipage_sections" not in check_chunk_settings("chunk_by_page", {})


def test_chunk_settings_are_normalised() -> None:
    out = check_chunk_settings(
        "chunk_by_similarity",
        {
            "max_characters": 800,
            "new_after_n_chars": None,
            "similarity_threshold": 1,
            "include_orig_elements": True,
            "contextual_chunking_strategy": None,
            "unstructured_api_key": None,
        },
    )
    assert out["max_characters"] == 800
    assert out["similarity_threshold"] == 1.0
    assert out["include_orig_elements"] is True


@pytest.mark.parametrize(
    ("subtype", "settings", "problem"),
    [
        ("chunk_by_title", {"max_characters": 0}, "'max_characters' must be at least 1"),
        ("chunk_by_title", {"max_characters": "500"}, "'max_characters' must be an integer"),
        ("chunk_by_title", {"max_characters": True}, "'max_characters' must be an integer"),
        ("chunk_by_title", {"overlap": -1}, "'overlap' must be at least 0"),
        (
            "chunk_by_title",
            {"max_characters": 100, "new_after_n_chars": 200},
            "'new_after_n_chars' (200) must not exceed 'max_characters' (100)",
        ),
        (
            "chunk_by_character",
            {"max_characters": 100, "overlap": 100},
            "'overlap' (100) must be less than 'max_characters' (100)",
        ),
        (
            "chunk_by_title",
            {"max_characters": 100, "combine_text_under_n_chars": 101},
            "'combine_text_under_n_chars' (101) must not exceed 'max_characters' (100)",
        ),
        (
            "chunk_by_similarity",
            {"similarity_threshold": 1.5},
            "'similarity_threshold' must be between 0 and 1",
        ),
        (
            "chunk_by_similarity",
            {"similarity_threshold": "high"},
            "'similarity_threshold' must be a number",
        ),
        ("chunk_by_title", {"overlap_all": "yes"}, "'overlap_all' must be true or false"),
        (
            "chunk_by_character",
            {"multipage_sections": True},
            "does not apply to chunk_by_character",
        ),
        ("chunk_by_title", {"similarity_threshold": 0.5}, "does not apply to chunk_by_title"),
        ("chunk_by_title", {"window": 3}, "unknown chunk setting 'window'"),
        (
            "chunk_by_title",
            {"contextual_chunking_strategy": "v1"},
            "'contextual_chunking_strategy' is deprecated",
        ),
        ("chunk_by_sentence", {}, "unknown chunk subtype 'chunk_by_sentence'"),
    ],
)
def test_bad_chunk_settings_are_named(
    subtype: str, settings: dict[str, object], problem: str
) -> None:
    with pytest.raises(DocumentError) as caught:
        check_chunk_settings(subtype, settings)
    assert problem in str(caught.value)


def test_unstructured_itself_rejects_what_the_check_rejects() -> None:
    """The contradictions the check names are ones unstructured's chunkers refuse too
    (or, for new_after_n_chars, silently clamp)."""
    from inferq.documents import runtime

    runtime.prepare()
    from unstructured.chunking.basic import chunk_elements
    from unstructured.chunking.title import chunk_by_title
    from unstructured.documents.elements import Text

    elements = [Text("some text")]
    with pytest.raises(ValueError, match="overlap"):
        chunk_elements(elements, max_characters=100, overlap=100)
    with pytest.raises(ValueError, match="combine_text_under_n_chars"):
        chunk_by_title(elements, max_characters=100, combine_text_under_n_chars=101)
