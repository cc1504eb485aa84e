"""Validation and normalisation of partition and chunk node settings.

Both checks are cheap (no unstructured import), so the API can run them at submission;
:func:`~inferq.documents.partition` and :func:`~inferq.documents.chunk` run them again.
A setting whose value is ``None`` means "the default", as the Platform's templates write it.
"""

from __future__ import annotations

import codecs
import importlib.util
import shutil
from collections.abc import Mapping
from typing import Final

from inferq.documents.errors import DocumentError

PARTITION_SUBTYPES: Final = ("unstructured_api", "vlm")
STRATEGIES: Final = ("fast", "auto", "hi_res")
CHUNK_SUBTYPES: Final = (
    "chunk_by_title",
    "chunk_by_character",
    "chunk_by_page",
    "chunk_by_similarity",
)
IMAGE_BLOCK_TYPES: Final = ("Image", "Table")

# element type names a partition can emit (unstructured's element categories), with the
# Platform's documented exclude_elements values among them
ELEMENT_TYPES: Final = frozenset(
    {
        "Abstract",
        "Address",
        "BulletedText",
        "Caption",
        "CodeSnippet",
        "CompositeElement",
        "DocumentData",
        "EmailAddress",
        "Figure",
        "FigureCaption",
        "Footer",
        "Footnote",
        "Form",
        "FormKeysValues",
        "Formula",
        "Header",
        "Headline",
        "Image",
        "Link",
        "List",
        "ListItem",
        "NarrativeText",
        "PageBreak",
        "PageNumber",
        "Paragraph",
        "Picture",
        "Subheadline",
        "Table",
        "TableChunk",
        "Text",
        "Title",
        "UncategorizedText",
        "Value",
    }
)
_ELEMENT_TYPES_BY_LOWER: Final = {name.lower(): name for name in ELEMENT_TYPES}

# hi_res: unstructured's layout model (unstructured-inference) and OCR (tesseract), with
# the default layout model's weights already in the local Hugging Face cache
HI_RES_MODEL_REPO: Final = "unstructuredio/yolo_x_layout"
HI_RES_MODEL_FILE: Final = "yolox_l0.05.onnx"
HI_RES_INSTALL_HINT: Final = (
    "install the layout model locally (pip install 'unstructured[pdf]', the tesseract "
    f"binary, and the {HI_RES_MODEL_REPO}/{HI_RES_MODEL_FILE} weights in the Hugging Face "
    "cache), or use strategy 'fast' or 'auto'"
)

# Platform settings that inferq accepts and has no use for (they configure Unstructured's
# own hosted services)
_IGNORED_PARTITION: Final = frozenset({"unstructured_api_url", "unstructured_api_key"})
_IGNORED_CHUNK: Final = frozenset({"unstructured_api_url", "unstructured_api_key"})

CHUNK_DEFAULTS: Final[dict[str, object]] = {
    "max_characters": 500,
    "new_after_n_chars": None,
    "overlap": 0,
    "overlap_all": False,
    "combine_text_under_n_chars": None,
    "include_orig_elements": False,
    "multipage_sections": True,
    "similarity_threshold": 0.5,
}
_CHUNK_KEYS: Final[dict[str, frozenset[str]]] = {
    "chunk_by_character": frozenset(
        {"max_characters", "new_after_n_chars", "overlap", "overlap_all", "include_orig_elements"}
    ),
    "chunk_by_title": frozenset(
        {
            "max_characters",
            "new_after_n_chars",
            "overlap",
            "overlap_all",
            "include_orig_elements",
            "combine_text_under_n_chars",
            "multipage_sections",
        }
    ),
    "chunk_by_page": frozenset(
        {"max_characters", "new_after_n_chars", "overlap", "overlap_all", "include_orig_elements"}
    ),
    "chunk_by_similarity": frozenset(
        {
            "max_characters",
            "new_after_n_chars",
            "overlap",
            "overlap_all",
            "include_orig_elements",
            "similarity_threshold",
        }
    ),
}


def hi_res_available() -> bool:
    """Whether hi_res partitioning can run here without downloading anything."""
    if importlib.util.find_spec("unstructured_inference") is None:
        return False
    if importlib.util.find_spec("unstructured_pytesseract") is None:
        return False
    if shutil.which("tesseract") is None:
        return False
    if importlib.util.find_spec("huggingface_hub") is None:
        return False
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(HI_RES_MODEL_REPO, HI_RES_MODEL_FILE), str)


def _bool(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise DocumentError(f"setting {name!r} must be true or false, got {value!r}")
    return value


def _int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise DocumentError(f"setting {name!r} must be an integer, got {value!r}")
    if value < minimum:
        raise DocumentError(f"setting {name!r} must be at least {minimum}, got {value}")
    return value


def _str_list(name: str, value: object) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise DocumentError(f"setting {name!r} must be a list of strings, got {value!r}")
    return [v.strip() for v in value if v.strip()]


def _languages(name: str, value: object) -> list[str]:
    codes = _str_list(name, value)
    from iso639 import Language, LanguageNotFoundError

    normalised: list[str] = []
    for code in codes:
        if code == "auto":
            normalised.append(code)
            continue
        try:
            # tesseract's codes join languages with "+" (eng+deu) and name scripts after
            # a "_" (chi_sim)
            for part in code.split("+"):
                Language.match(part.split("_", 1)[0])
        except LanguageNotFoundError:
            raise DocumentError(
                f"setting {name!r}: unknown language code {code!r} (use ISO 639 codes like "
                "'eng' or 'en')"
            ) from None
        normalised.append(code)
    return normalised


def check_partition_settings(subtype: str, settings: Mapping[str, object]) -> dict[str, object]:
    """Validate a partition node's settings; return them normalised, defaults filled in.

    ``unstructured_api`` takes the Platform's settings for it: strategy (fast, auto,
    hi_res), include_page_breaks, pdf_infer_table_structure, infer_table_structure,
    exclude_elements, xml_keep_tags, encoding, languages, ocr_languages,
    extract_image_block_types, coordinates, unique_element_ids. Raises DocumentError
    naming the first unknown or bad setting.
    """
    if subtype == "vlm":
        raise DocumentError(
            "vlm partitioning needs a vision model: configure one, or use the "
            "unstructured_api partitioner"
        )
    if subtype not in PARTITION_SUBTYPES:
        raise DocumentError(
            f"unknown partition subtype {subtype!r}; "
            f"expected one of {', '.join(PARTITION_SUBTYPES)}"
        )
    out: dict[str, object] = {
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
    ocr_languages: list[str] | None = None
    for name, value in settings.items():
        if name in _IGNORED_PARTITION:
            continue
        if value is None:
            if name in out or name == "ocr_languages":
                continue
            raise DocumentError(f"unknown partition setting {name!r}")
        if name == "strategy":
            strategy = str(value).lower() if isinstance(value, str) else value
            if strategy not in STRATEGIES:
                raise DocumentError(
                    f"setting 'strategy' must be one of {', '.join(STRATEGIES)}, got {value!r}"
                )
            if strategy == "hi_res" and not hi_res_available():
                raise DocumentError(
                    "strategy 'hi_res' needs unstructured's layout model, which is not "
                    f"installed here: {HI_RES_INSTALL_HINT}"
                )
            out["strategy"] = strategy
        elif name in (
            "include_page_breaks",
            "pdf_infer_table_structure",
            "infer_table_structure",
            "xml_keep_tags",
            "coordinates",
            "unique_element_ids",
        ):
            out[name] = _bool(name, value)
        elif name == "exclude_elements":
            excluded: list[str] = []
            for item in _str_list(name, value):
                canonical = _ELEMENT_TYPES_BY_LOWER.get(item.lower())
                if canonical is None:
                    raise DocumentError(
                        f"setting 'exclude_elements': unknown element type {item!r}; "
                        f"known types: {', '.join(sorted(ELEMENT_TYPES))}"
                    )
                excluded.append(canonical)
            out[name] = excluded
        elif name == "encoding":
            if not isinstance(value, str) or not value.strip():
                raise DocumentError(f"setting 'encoding' must be an encoding name, got {value!r}")
            try:
                out[name] = codecs.lookup(value.strip()).name
            except LookupError:
                raise DocumentError(f"setting 'encoding': unknown encoding {value!r}") from None
        elif name == "languages":
            out[name] = _languages(name, value) or None
        elif name == "ocr_languages":
            ocr_languages = _languages(name, value) or None
        elif name == "extract_image_block_types":
            kinds: list[str] = []
            for item in _str_list(name, value):
                match = [k for k in IMAGE_BLOCK_TYPES if k.lower() == item.lower()]
                if not match:
                    raise DocumentError(
                        f"setting 'extract_image_block_types': {item!r} is not one of "
                        f"{', '.join(IMAGE_BLOCK_TYPES)}"
                    )
                kinds.append(match[0])
            out[name] = kinds
        else:
            raise DocumentError(f"unknown partition setting {name!r}")
    # ocr_languages is the older name for languages; languages wins when both are given
    if out["languages"] is None and ocr_languages is not None:
        out["languages"] = ocr_languages
    return out


def check_chunk_settings(subtype: str, settings: Mapping[str, object]) -> dict[str, object]:
    """Validate a chunk node's settings; return them normalised, defaults filled in.

    Raises DocumentError naming the unknown, ill-typed or contradictory setting: a
    setting the subtype does not take, new_after_n_chars over max_characters, an
    overlap not below max_characters, combine_text_under_n_chars over max_characters,
    a similarity_threshold outside 0..1.
    """
    if subtype not in CHUNK_SUBTYPES:
        raise DocumentError(
            f"unknown chunk subtype {subtype!r}; expected one of {', '.join(CHUNK_SUBTYPES)}"
        )
    allowed = _CHUNK_KEYS[subtype]
    out = {k: v for k, v in CHUNK_DEFAULTS.items() if k in allowed}
    for name, value in settings.items():
        if name in _IGNORED_CHUNK:
            continue
        if name == "contextual_chunking_strategy":
            if value is not None:
                raise DocumentError(
                    "setting 'contextual_chunking_strategy' is deprecated and not supported; "
                    "leave it null"
                )
            continue
        if name not in CHUNK_DEFAULTS:
            raise DocumentError(f"unknown chunk setting {name!r}")
        if name not in allowed:
            raise DocumentError(f"setting {name!r} does not apply to {subtype}")
        if value is None:
            continue
        if name in ("max_characters",):
            out[name] = _int(name, value, minimum=1)
        elif name in ("new_after_n_chars", "overlap", "combine_text_under_n_chars"):
            out[name] = _int(name, value, minimum=0)
        elif name == "similarity_threshold":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise DocumentError(
                    f"setting 'similarity_threshold' must be a number, got {value!r}"
                )
            if not 0.0 <= float(value) <= 1.0:
                raise DocumentError(
                    f"setting 'similarity_threshold' must be between 0 and 1, got {value}"
                )
            out[name] = float(value)
        else:
            out[name] = _bool(name, value)
    max_characters = out["max_characters"]
    assert isinstance(max_characters, int)
    new_after = out["new_after_n_chars"]
    if isinstance(new_after, int) and new_after > max_characters:
        raise DocumentError(
            f"setting 'new_after_n_chars' ({new_after}) must not exceed 'max_characters' "
            f"({max_characters})"
        )
    overlap = out["overlap"]
    if isinstance(overlap, int) and overlap >= max_characters:
        raise DocumentError(
            f"setting 'overlap' ({overlap}) must be less than 'max_characters' ({max_characters})"
        )
    combine = out.get("combine_text_under_n_chars")
    if isinstance(combine, int) and combine > max_characters:
        raise DocumentError(
            f"setting 'combine_text_under_n_chars' ({combine}) must not exceed "
            f"'max_characters' ({max_characters})"
        )
    return out
