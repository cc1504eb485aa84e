"""File and dataset bytes: the BlobStore port and its adapters."""

from __future__ import annotations

from inferq.blobs.base import BlobStore, BlobWriter
from inferq.blobs.local import LocalBlobs
from inferq.blobs.memory import MemoryBlobs

__all__ = ["BlobStore", "BlobWriter", "LocalBlobs", "MemoryBlobs"]
