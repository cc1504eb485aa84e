"""Drive :mod:`tests.support.webhook_receiver` (a separate process) from a test."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai

from tests.support.server import free_port

ROOT = Path(__file__).resolve().parents[2]


class Receiver:
    """A webhook receiver process on 127.0.0.1 that logs every request it gets."""

    def __init__(self, folder: Path, *, fail_first: int = 0, port: int | None = None) -> None:
        self.port = port or free_port()
        self.log = folder / f"receiver-{self.port}.jsonl"
        self.fail_first = fail_first
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/inferq"

    def start(self) -> Receiver:
        args = [sys.executable, "-m", "tests.support.webhook_receiver", str(self.port)]
        self.proc = subprocess.Popen([*args, str(self.log), str(self.fail_first)], cwd=ROOT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("the webhook receiver did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def requests(self) -> list[dict[str, Any]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def wait_for(self, count: int, timeout: float = 60.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.requests()
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"the receiver got {len(self.requests())} requests, not {count}")


def unwrap(request: dict[str, Any], secret: str) -> Any:
    """The event, verified as a client would: with the openai SDK."""
    client = openai.OpenAI(api_key="unused", base_url="http://127.0.0.1:9")
    return client.webhooks.unwrap(request["body"], request["headers"], secret=secret)
