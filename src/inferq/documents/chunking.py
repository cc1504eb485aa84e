"""Chunking partitioned elements: by title, by character (basic), by page, by similarity.

Chunks are unstructured's own (CompositeElement, Table, TableChunk, made by its basic and
by-title chunkers), so their text, metadata and ``metadata.orig_elements`` (unstructured's
gzipped, base64 JSON, as the Platform emits it) are what the Platform writes. inferq adds
two strategies on top of unstructured's chunkers: by page (the basic chunker run on each
page's elements alone) and by similarity (consecutive elements grouped by the cosine
similarity of their embeddings, each group then chunked by the basic chunker). Chunk
element ids are content hashes, as partition ids are, so a re-run gives the same ids.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from typing import Any

from inferq.documents import runtime
from inferq.documents.errors import DocumentError
from inferq.documents.settings import check_chunk_settings

Element = Any  # unstructured.documents.elements.Element

# what separates two elements' text inside a chunk (unstructured's chunkers use the same)
_SEPARATOR = "\n\n"


def texts_for_embedding(elements: Sequence[Mapping[str, object]]) -> list[str]:
    """The text of each element, in order ("" where an element has none)."""
    return [str(e.get("text") or "") for e in elements]


def chunk(
    elements: list[dict[str, object]],
    subtype: str,
    settings: Mapping[str, object],
    vectors: Sequence[Sequence[float]] | None = None,
) -> list[dict[str, object]]:
    """Chunk one file's elements with a chunk node's subtype and settings.

    ``chunk_by_similarity`` needs ``vectors``: one embedding per element, in order.
    Raises DocumentError for bad settings, missing or mismatched vectors, or elements
    that are not unstructured element dicts.
    """
    options = check_chunk_settings(subtype, settings)
    if subtype == "chunk_by_similarity":
        checked = _check_vectors(elements, vectors)
    elif vectors is not None:
        raise DocumentError(f"{subtype} takes no vectors; only chunk_by_similarity does")
    if not elements:
        return []
    runtime.prepare()
    from unstructured.documents.elements import TYPE_TO_TEXT_ELEMENT_MAP, assign_and_map_hash_ids
    from unstructured.staging.base import elements_from_dicts, elements_to_dicts

    known = {*TYPE_TO_TEXT_ELEMENT_MAP, "TableChunk", "CheckBox"}
    for i, item in enumerate(elements):
        kind = item.get("type") if isinstance(item, dict) else None
        if (
            kind not in known
            or not isinstance(item.get("text", ""), str)
            or not isinstance(item.get("metadata") or {}, dict)
        ):
            raise DocumentError(f"element {i} is not an unstructured element dict")
    try:
        objects = elements_from_dicts(elements)
    except Exception as exc:
        raise DocumentError(f"elements are not unstructured element dicts ({exc})") from exc
    try:
        if subtype == "chunk_by_title":
            chunks = _by_title(objects, options)
        elif subtype == "chunk_by_character":
            chunks = _basic(objects, options)
        elif subtype == "chunk_by_page":
            chunks = _by_page(objects, options)
        else:
            chunks = _by_similarity(objects, checked, options)
    except ValueError as exc:
        raise DocumentError(f"{subtype}: {exc}") from exc
    chunks = assign_and_map_hash_ids(chunks)
    result: list[dict[str, object]] = elements_to_dicts(chunks)
    return result


def _basic_kwargs(options: Mapping[str, object]) -> dict[str, Any]:
    keys = ("max_characters", "new_after_n_chars", "overlap", "overlap_all")
    kwargs = {k: options[k] for k in keys if options.get(k) is not None}
    kwargs["include_orig_elements"] = options["include_orig_elements"]
    return kwargs


def _basic(objects: list[Element], options: Mapping[str, object]) -> list[Element]:
    from unstructured.chunking.basic import chunk_elements

    return list(chunk_elements(objects, **_basic_kwargs(options)))


def _by_title(objects: list[Element], options: Mapping[str, object]) -> list[Element]:
    from unstructured.chunking.title import chunk_by_title

    kwargs = _basic_kwargs(options)
    kwargs["multipage_sections"] = options["multipage_sections"]
    if options.get("combine_text_under_n_chars") is not None:
        kwargs["combine_text_under_n_chars"] = options["combine_text_under_n_chars"]
    return list(chunk_by_title(objects, **kwargs))


def _by_page(objects: list[Element], options: Mapping[str, object]) -> list[Element]:
    """One chunk per page, split further where a page's text exceeds max_characters.

    Elements with no page number (formats without pages) count as one page.
    """
    chunks: list[Element] = []
    for _page, group in itertools.groupby(objects, key=lambda e: e.metadata.page_number):
        members = [e for e in group if e.category != "PageBreak"]
        if members:
            chunks += _basic(members, options)
    return chunks


def _check_vectors(
    elements: Sequence[object], vectors: Sequence[Sequence[float]] | None
) -> list[list[float]]:
    if vectors is None:
        raise DocumentError("chunk_by_similarity needs an embedding for every element")
    if len(vectors) != len(elements):
        raise DocumentError(
            f"chunk_by_similarity needs one embedding per element: got {len(vectors)} for "
            f"{len(elements)} elements"
        )
    checked: list[list[float]] = []
    for i, vector in enumerate(vectors):
        try:
            values = [float(v) for v in vector]
        except (TypeError, ValueError) as exc:
            raise DocumentError(f"embedding {i} is not a list of numbers") from exc
        if checked and len(values) != len(checked[0]):
            raise DocumentError(
                f"embedding {i} has {len(values)} dimensions, embedding 0 has {len(checked[0])}"
            )
        if not all(math.isfinite(v) for v in values):
            raise DocumentError(f"embedding {i} has a value that is not a finite number")
        checked.append(values)
    return checked


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return sum(x * y for x, y in zip(a, b, strict=True)) / norm if norm else 0.0


def similarity_groups(
    texts: Sequence[str],
    vectors: Sequence[Sequence[float]],
    threshold: float,
    max_characters: int,
) -> list[list[int]]:
    """Group consecutive items (by index) while each next item's cosine similarity to the
    running group's centroid (the sum of its members' vectors) stays >= threshold and the
    group's joined text stays within max_characters. An item with no text joins the group
    it is in."""
    groups: list[list[int]] = []
    centroid: list[float] = []
    length = 0
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        if groups and not text:
            groups[-1].append(i)
            continue
        joined = length + len(_SEPARATOR) + len(text) if length else len(text)
        if (
            groups
            and length
            and joined <= max_characters
            and _cosine(vector, centroid) >= threshold
        ):
            groups[-1].append(i)
            centroid = [c + v for c, v in zip(centroid, vector, strict=True)]
            length = joined
            continue
        groups.append([i])
        centroid = list(vector)
        length = len(text)
    return groups


def _by_similarity(
    objects: list[Element], vectors: list[list[float]], options: Mapping[str, object]
) -> list[Element]:
    threshold = options["similarity_threshold"]
    max_characters = options["max_characters"]
    assert isinstance(threshold, float)
    assert isinstance(max_characters, int)
    soft_max = options.get("new_after_n_chars")
    limit = soft_max if isinstance(soft_max, int) and soft_max > 0 else max_characters
    kept = [i for i, e in enumerate(objects) if e.category != "PageBreak"]
    groups = similarity_groups(
        [objects[i].text for i in kept], [vectors[i] for i in kept], threshold, limit
    )
    # each group fits in one chunk unless one element alone is over max_characters, which
    # the basic chunker then splits (with overlap) as it does everywhere else
    group_options = dict(options)
    group_options["new_after_n_chars"] = None
    chunks: list[Element] = []
    for group in groups:
        chunks += _basic([objects[kept[i]] for i in group], group_options)
    return chunks
