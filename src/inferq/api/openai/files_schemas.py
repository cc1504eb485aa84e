"""OpenAI's file object and list page, and the checks of an upload's fields."""

from __future__ import annotations

from typing import Any

from inferq.core.errors import InvalidRequest
from inferq.core.models import FileRecord

#: the purposes a client may upload a file with (``batch`` is the one inferq runs)
UPLOAD_PURPOSES = frozenset({"assistants", "batch", "fine-tune", "vision", "user_data", "evals"})
#: the longest file name kept
MAX_FILENAME = 255


def check_purpose(purpose: str) -> str:
    purpose = purpose.strip()
    if purpose not in UPLOAD_PURPOSES:
        raise InvalidRequest(
            f"purpose: {purpose!r} is not supported; use one of "
            + ", ".join(sorted(UPLOAD_PURPOSES)),
            param="purpose",
        )
    return purpose


def clean_filename(filename: str | None) -> str:
    """The name a file is listed under: the last path component, without control characters."""
    # a field sent without a filename (curl -F 'file=<data.jsonl') is still a file
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if c.isprintable() and c != '"')[:MAX_FILENAME].strip()
    return name or "file"


def render_file(record: FileRecord) -> dict[str, Any]:
    """OpenAI's file object."""
    return {
        "id": record.id,
        "object": "file",
        "bytes": record.bytes,
        "created_at": int(record.created_at),
        "filename": record.filename,
        "purpose": record.purpose,
        "status": "processed",
        "expires_at": _expires_at(record),
        "status_details": None,
    }


def _expires_at(record: FileRecord) -> int | None:
    at = record.meta.get("expires_at")
    return int(at) if isinstance(at, int | float) else None


def list_page(data: list[dict[str, Any]], *, has_more: bool) -> dict[str, Any]:
    """OpenAI's cursor page."""
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }
