"""Document processing for document workflows: checking, partitioning and chunking files.

Pure and synchronous (callers run it in a worker thread): no HTTP, no store. Elements
are unstructured's element dicts ({type, element_id, text, metadata{filename, filetype,
languages, page_number, ...}}), the schema the Unstructured Platform emits. The
unstructured library is imported lazily, and never downloads anything at run time (see
:mod:`inferq.documents.runtime`).
"""

from __future__ import annotations

from inferq.documents.chunking import chunk, texts_for_embedding
from inferq.documents.errors import DocumentError
from inferq.documents.formats import SUPPORTED_TYPES, check_document
from inferq.documents.partitioning import partition
from inferq.documents.settings import (
    check_chunk_settings,
    check_partition_settings,
    hi_res_available,
)

__all__ = [
    "SUPPORTED_TYPES",
    "DocumentError",
    "check_chunk_settings",
    "check_document",
    "check_partition_settings",
    "chunk",
    "hi_res_available",
    "partition",
    "texts_for_embedding",
]
