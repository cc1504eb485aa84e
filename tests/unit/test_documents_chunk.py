"""inferq.documents: chunking partitioned elements with every strategy."""

from __future__ import annotations

import pytest

from inferq.documents import DocumentError, chunk, partition, texts_for_embedding
from inferq.documents.chunking import similarity_groups
from tests import documents_samples as samples


def element(text: str, page: int | None = None, kind: str = "NarrativeText") -> dict[str, object]:
    metadata: dict[str, object] = {"filename": "doc.txt", "filetype": "text/plain"}
    if page is not None:
        metadata["page_number"] = page
    return {"type": kind, "element_id": f"id-{text[:12]}", "text": text, "metadata": metadata}


def sentence(n: int) -> str:
    """About 50 characters, ending in a token no other sentence has."""
    return f"Queue note number {n:02d} ends with token{n:03d}x."


def meta(item: dict[str, object]) -> dict[str, object]:
    metadata = item["metadata"]
    assert isinstance(metadata, dict)
    return metadata


def orig_elements(chunk_dict: dict[str, object]) -> list[dict[str, object]]:
    from inferq.documents import runtime

    runtime.prepare()
    from unstructured.staging.base import elements_from_base64_gzipped_json, elements_to_dicts

    encoded = meta(chunk_dict)["orig_elements"]
    assert isinstance(encoded, str)
    decoded: list[dict[str, object]] = elements_to_dicts(elements_from_base64_gzipped_json(encoded))
    return decoded


def test_texts_for_embedding() -> None:
    elements = [element("one"), element("two"), {"type": "PageBreak", "text": "", "metadata": {}}]
    assert texts_for_embedding(elements) == ["one", "two", ""]


def test_chunk_by_title_starts_a_chunk_at_each_title() -> None:
    elements = partition(*samples.markdown_file(), {})
    chunks = chunk(
        elements, "chunk_by_title", {"max_characters": 1000, "combine_text_under_n_chars": 0}
    )
    assert [c["type"] for c in chunks] == ["CompositeElement", "CompositeElement"]
    assert str(chunks[0]["text"]).startswith(samples.TITLE)
    assert samples.PARAGRAPH in str(chunks[0]["text"])
    assert str(chunks[1]["text"]).startswith("Details")
    assert "second point of the list" in str(chunks[1]["text"])
    assert all(meta(c)["filename"] == "report.md" for c in chunks)


def test_chunk_by_character_ignores_titles_and_fills_chunks() -> None:
    elements = partition(*samples.markdown_file(), {})
    chunks = chunk(elements, "chunk_by_character", {"max_characters": 1000})
    assert len(chunks) == 1
    assert str(chunks[0]["text"]).startswith(samples.TITLE)
    assert str(chunks[0]["text"]).endswith("second point of the list")


@pytest.mark.parametrize("subtype", ["chunk_by_title", "chunk_by_character", "chunk_by_page"])
def test_max_characters_is_respected(subtype: str) -> None:
    elements = [element(sentence(n) * 3, page=1 + n // 4) for n in range(12)]
    chunks = chunk(elements, subtype, {"max_characters": 120})
    assert len(chunks) > len(elements)
    assert all(len(str(c["text"])) <= 120 for c in chunks)
    joined = "".join(str(c["text"]) for c in chunks).replace(" ", "")
    assert joined == "".join(str(e["text"]) for e in elements).replace(" ", "")


def test_new_after_n_chars_closes_chunks_early() -> None:
    elements = [element(sentence(n)) for n in range(6)]
    whole = chunk(elements, "chunk_by_character", {"max_characters": 1000})
    soft = chunk(elements, "chunk_by_character", {"max_characters": 1000, "new_after_n_chars": 60})
    assert len(whole) == 1
    assert len(soft) == 3


def test_overlap_repeats_the_tail_of_a_split_element() -> None:
    long_text = " ".join(sentence(n) for n in range(8))
    plain = chunk([element(long_text)], "chunk_by_character", {"max_characters": 100})
    overlapped = chunk(
        [element(long_text)], "chunk_by_character", {"max_characters": 100, "overlap": 20}
    )
    assert len(plain) > 1
    # the next chunk starts with (about) the last 20 characters of the one before
    assert str(overlapped[1]["text"])[:12] in str(overlapped[0]["text"])[-20:]
    assert str(plain[1]["text"])[:12] not in str(plain[0]["text"])


def test_overlap_all_overlaps_whole_element_chunks_too() -> None:
    elements = [element(sentence(n)) for n in range(4)]
    settings = {"max_characters": 120, "overlap": 15}
    without = chunk(elements, "chunk_by_character", settings)
    with_all = chunk(elements, "chunk_by_character", {**settings, "overlap_all": True})
    assert len(without) == len(with_all) > 1
    assert str(with_all[1]["text"])[:10] in str(with_all[0]["text"])[-15:]
    assert str(without[1]["text"]).startswith("Queue note")


def test_include_orig_elements() -> None:
    elements = partition(*samples.html_file(), {})
    without = chunk(elements, "chunk_by_title", {"max_characters": 1000})
    assert all("orig_elements" not in meta(c) for c in without)
    settings = {"max_characters": 1000, "combine_text_under_n_chars": 0}
    chunks = chunk(elements, "chunk_by_title", {**settings, "include_orig_elements": True})
    originals = orig_elements(chunks[0])
    assert [o["type"] for o in originals] == ["Title", "NarrativeText"]
    assert [o["element_id"] for o in originals] == [e["element_id"] for e in elements[:2]]


def test_combine_text_under_n_chars_merges_small_sections() -> None:
    elements = [
        element("Intro", kind="Title"),
        element("Short text one."),
        element("Next", kind="Title"),
        element("Short text two."),
    ]
    separate = chunk(elements, "chunk_by_title", {"combine_text_under_n_chars": 0})
    combined = chunk(elements, "chunk_by_title", {"combine_text_under_n_chars": 200})
    assert len(separate) == 2
    assert len(combined) == 1


def test_multipage_sections() -> None:
    elements = [element("Heading", page=1, kind="Title"), element("Body one.", page=1)]
    elements += [element("Body two.", page=2)]
    settings = {"combine_text_under_n_chars": 0}
    across = chunk(elements, "chunk_by_title", {**settings, "multipage_sections": True})
    per_page = chunk(elements, "chunk_by_title", {**settings, "multipage_sections": False})
    assert len(across) == 1
    assert [meta(c)["page_number"] for c in per_page] == [1, 2]


def test_chunk_by_page_gives_one_chunk_per_page() -> None:
    elements = partition(*samples.pdf_file(), {"include_page_breaks": True})
    chunks = chunk(elements, "chunk_by_page", {"max_characters": 2000})
    assert [meta(c)["page_number"] for c in chunks] == [1, 2]
    assert str(chunks[0]["text"]).startswith(samples.TITLE)
    assert chunks[1]["text"] == samples.PAGE_TWO_TEXT
    # the basic chunker alone would have put both pages in one chunk
    assert len(chunk(elements, "chunk_by_character", {"max_characters": 2000})) == 1


def test_chunk_by_page_splits_a_long_page() -> None:
    elements = [element(sentence(n), page=1) for n in range(10)] + [element("Last.", page=2)]
    chunks = chunk(elements, "chunk_by_page", {"max_characters": 200})
    assert [meta(c)["page_number"] for c in chunks][-1] == 2
    assert len([c for c in chunks if meta(c)["page_number"] == 1]) > 1
    assert all(len(str(c["text"])) <= 200 for c in chunks)


def test_chunk_by_similarity_groups_similar_neighbours() -> None:
    elements = [element(sentence(n)) for n in range(5)]
    vectors = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [1.0, 0.0]]
    chunks = chunk(
        elements,
        "chunk_by_similarity",
        {"similarity_threshold": 0.8, "max_characters": 1000},
        vectors=vectors,
    )
    assert [c["text"] for c in chunks] == [
        f"{sentence(0)}\n\n{sentence(1)}",
        f"{sentence(2)}\n\n{sentence(3)}",
        sentence(4),
    ]


def test_chunk_by_similarity_threshold_and_max_characters() -> None:
    elements = [element(sentence(n)) for n in range(4)]
    vectors = [[1.0, 0.0], [0.6, 0.8], [1.0, 0.0], [0.6, 0.8]]  # neighbours at cosine 0.6
    loose = chunk(elements, "chunk_by_similarity", {"similarity_threshold": 0.5}, vectors=vectors)
    strict = chunk(elements, "chunk_by_similarity", {"similarity_threshold": 0.7}, vectors=vectors)
    assert len(loose) == 1
    assert len(strict) == 4
    small = chunk(
        elements,
        "chunk_by_similarity",
        {"similarity_threshold": 0.0, "max_characters": 120},
        vectors=vectors,
    )
    assert len(small) == 2
    assert all(len(str(c["text"])) <= 120 for c in small)


def test_chunk_by_similarity_orig_elements() -> None:
    elements = [element(sentence(n)) for n in range(3)]
    chunks = chunk(
        elements,
        "chunk_by_similarity",
        {"include_orig_elements": True},
        vectors=[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]],
    )
    assert [len(orig_elements(c)) for c in chunks] == [2, 1]


def test_similarity_groups_running_centroid() -> None:
    # the third vector is close to the second but not to the group's centroid
    vectors = [[1.0, 0.0], [0.7, 0.7], [0.0, 1.0]]
    groups = similarity_groups(["a", "b", "c"], vectors, threshold=0.7, max_characters=100)
    assert groups == [[0, 1], [2]]


def test_chunk_ids_are_deterministic_hashes() -> None:
    elements = partition(*samples.markdown_file(), {})
    first = chunk(elements, "chunk_by_title", {})
    second = chunk(elements, "chunk_by_title", {})
    assert [c["element_id"] for c in first] == [c["element_id"] for c in second]
    assert all(len(str(c["element_id"])) == 32 for c in first)
    assert len({c["element_id"] for c in first}) == len(first)


def test_chunk_of_nothing_is_nothing() -> None:
    assert chunk([], "chunk_by_title", {}) == []


@pytest.mark.parametrize(
    ("vectors", "problem"),
    [
        (None, "needs an embedding for every element"),
        ([[1.0, 0.0]], "one embedding per element: got 1 for 2 elements"),
        ([[1.0, 0.0], [1.0]], "embedding 1 has 1 dimensions"),
        ([[1.0, 0.0], ["x", 0.0]], "embedding 1 is not a list of numbers"),
        ([[1.0, 0.0], [float("nan"), 0.0]], "not a finite number"),
    ],
)
def test_chunk_by_similarity_rejects_bad_vectors(
    vectors: list[list[object]] | None, problem: str
) -> None:
    elements = [element("one"), element("two")]
    with pytest.raises(DocumentError, match=problem):
        chunk(elements, "chunk_by_similarity", {}, vectors=vectors)  # type: ignore[arg-type]


def test_vectors_only_for_similarity() -> None:
    with pytest.raises(DocumentError, match="takes no vectors"):
        chunk([element("one")], "chunk_by_title", {}, vectors=[[1.0]])


@pytest.mark.parametrize(
    "bad",
    [
        {"text": "no type"},
        {"type": "NoSuchType", "text": "x"},
        {"type": "Title", "text": 3},
        {"type": "Title", "text": "x", "metadata": "not a dict"},
    ],
)
def test_elements_that_are_not_element_dicts(bad: dict[str, object]) -> None:
    with pytest.raises(DocumentError, match="element 1 is not an unstructured element"):
        chunk([element("fine"), bad], "chunk_by_title", {})
