"""Python handlers that ``inferq node`` processes load in the node tests.

:class:`Workbench` does what its payload's ``mode`` says: ``echo`` (progress, info, a PNG
file output), ``sleep`` (seconds of work, watching for a cancel), ``fail`` (JobFailed)
or ``crash`` (an exception: retried). Every start, end and seen cancel is appended to
the file named by ``INFERQ_TEST_NODE_LOG`` (one JSON object per line), with the node's
``INFERQ_TEST_NODE_NAME``, so a test can tell which node ran what and how often.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import Any

from inferq.worker import Context, FileOutput, Handler, JobFailed


def png_bytes(width: int = 4, height: int = 3) -> bytes:
    """A small valid PNG: red pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + b"\xff\x00\x00" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


def record(event: str, ctx: Context, **extra: Any) -> None:
    path = os.environ.get("INFERQ_TEST_NODE_LOG")
    if not path:
        return
    line = {
        "event": event,
        "job": ctx.job_id,
        "attempt": ctx.attempt,
        "node": os.environ.get("INFERQ_TEST_NODE_NAME", ""),
        "time": time.time(),
        **extra,
    }
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")


class Workbench(Handler):
    def setup(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="inferq-handler-"))

    def predict(self, payload: dict[str, Any], ctx: Context) -> dict[str, Any]:
        record("start", ctx)
        mode = payload.get("mode", "echo")
        if mode == "fail":
            raise JobFailed("the payload asked to fail")
        if mode == "crash":
            raise RuntimeError("the handler crashed")
        if mode == "sleep":
            seconds = float(payload.get("seconds", 1))
            steps = max(1, int(seconds / 0.05))
            for step in range(steps):
                if ctx.wait_cancelled(seconds / steps):
                    record("cancelled", ctx)
                    return {"cancelled": True}
                ctx.progress((step + 1) / steps)
            record("done", ctx)
            return {"slept": seconds}
        ctx.progress(0.5)
        ctx.emit({"stage": "render"})
        image = self.dir / f"{ctx.job_id}.png"
        image.write_bytes(png_bytes())
        record("done", ctx)
        return {"echo": payload, "image": FileOutput(image, name="frame.png"), "frames": 48}
