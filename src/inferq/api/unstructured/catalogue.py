"""Unstructured's node catalogue: the subtype names its workflows use, and its templates.

Core runs four kinds of node (partition, prompter, chunk, embed) and three text
enrichments; which of Unstructured's names stand for which is said here, once, and
handed to core as a :class:`~inferq.core.workflows.Catalogue` (through the
runtime's plugins). Provider-prefixed names (``openai_ner``, ``anthropic_ner``) all
run on the configured local chat model.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from inferq.core.workflow_meta import (
    CHUNK,
    EMBED,
    NER,
    PARTITION,
    PROMPTER,
    TABLE2HTML,
    TABLE_DESCRIPTION,
    Node,
)
from inferq.core.workflows import Catalogue

PROVIDERS = ("openai", "anthropic", "bedrock", "vertexai")


@dataclass(frozen=True, slots=True)
class Template:
    id: str
    name: str
    description: str
    nodes: tuple[Node, ...]
    #: every template is of the same release
    version: str = "1.0.0"
    last_updated: str = "2026-11-22T00:00:00Z"


def _node(key: str, name: str, type: str, subtype: str, **settings: Any) -> Node:
    """A node of a template, by its key in the template (:func:`_template` names it)."""
    return Node(id=key, name=name, type=type, subtype=subtype, settings=settings)


def _partitioner(strategy: str, **settings: Any) -> Node:
    """The first node of every template: Unstructured's partitioner, with ``strategy``."""
    return _node(
        "partition", "Partitioner", PARTITION, "unstructured_api", strategy=strategy, **settings
    )


def _template(id: str, name: str, description: str, *nodes: Node) -> Template:
    """A template of ``nodes``, each named ``ID-KEY`` after its key."""
    named = tuple(replace(node, id=f"{id}-{node.id}") for node in nodes)
    return Template(id=id, name=name, description=description, nodes=named)


TEMPLATES: dict[str, Template] = {
    t.id: t
    for t in (
        _template(
            "hi_res_partition",
            "High-resolution partition",
            "Partition with the hi_res strategy (needs the local layout model).",
            _partitioner("hi_res", include_page_breaks=False),
        ),
        _template(
            "hi_res_and_enrichment",
            "High-resolution partition and enrichment",
            "Partition with hi_res, then describe tables and tag named entities "
            "with the chat model.",
            _partitioner("hi_res", infer_table_structure=True),
            _node("table", "Table description", PROMPTER, "openai_table_description"),
            _node("ner", "Named entities", PROMPTER, "openai_ner"),
        ),
        _template(
            "fast_partition",
            "Fast partition",
            "Partition with the fast strategy: text extraction, no layout model.",
            _partitioner("fast"),
        ),
        _template(
            "fast_chunk_embed",
            "Fast partition, chunk by title, embed",
            "Partition with the fast strategy, chunk by title, and embed each "
            "chunk with the local embedding model.",
            _partitioner("fast"),
            _node("chunk", "Chunker", CHUNK, "chunk_by_title",
                  max_characters=1000, new_after_n_chars=800, overlap=0),
            _node("embed", "Embedder", EMBED, "togetherai"),
        ),
    )
}  # fmt: skip

#: what core's workflow service and executor are given
CATALOGUE = Catalogue(
    partition=frozenset({"unstructured_api", "vlm"}),
    # these need a vision model
    vision_partition=frozenset({"vlm"}),
    chunk=frozenset(
        {"chunk_by_character", "chunk_by_title", "chunk_by_page", "chunk_by_similarity"}
    ),
    embed=frozenset(
        {"azure_openai", "bedrock", "ibm", "togetherai", "voyageai", "openai", "mixedbread-ai"}
    ),
    # the prompter subtypes that run on a chat model, by what they do
    text_enrichments={
        **{f"{p}_table_description": TABLE_DESCRIPTION for p in PROVIDERS},
        **{f"{p}_table2html": TABLE2HTML for p in ("openai", "anthropic")},
        "twopass_table2html": TABLE2HTML,
        **{f"{p}_ner": NER for p in ("openai", "anthropic")},
    },
    # and those that need a model that reads images
    vision_enrichments=frozenset(
        {f"{p}_image_description" for p in PROVIDERS} | {"openai_ocr", "anthropic_ocr", "ocr"}
    ),
    templates={t.id: t.nodes for t in TEMPLATES.values()},
)
