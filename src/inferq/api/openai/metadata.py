"""OpenAI's ``metadata``: up to 16 string pairs, on batches and responses alike."""

from __future__ import annotations

from inferq.core.errors import InvalidRequest

#: OpenAI's limits on metadata
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512


def check_metadata(metadata: dict[str, str] | None) -> None:
    if metadata is None:
        return
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidRequest(
            f"metadata: at most {MAX_METADATA_PAIRS} key-value pairs, got {len(metadata)}",
            param="metadata",
        )
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            raise InvalidRequest(
                f"metadata: key {key[:20]!r}... is longer than {MAX_METADATA_KEY} characters",
                param="metadata",
            )
        if len(value) > MAX_METADATA_VALUE:
            raise InvalidRequest(
                f"metadata.{key}: longer than {MAX_METADATA_VALUE} characters",
                param=f"metadata.{key}",
            )
