"""``inferq node`` processes for the node tests: started, watched and stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.server import Server

HANDLER = "tests.support.node_handlers:Workbench"


class NodeProc:
    """One ``inferq node`` process, its output in its own log file."""

    def __init__(self, server: Server, token: str, name: str, *args: str, log: Path) -> None:
        self.name = name
        self.log_path = server.data_dir.parent / f"node-{name}-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
        env.update(
            PYTHONUNBUFFERED="1",
            INFERQ_NODE_TOKEN=token,
            INFERQ_TEST_NODE_LOG=str(log),
            INFERQ_TEST_NODE_NAME=name,
        )
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "inferq", "node", "--server", server.url, *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=Path(__file__).resolve().parents[2],  # where tests.support is importable
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_connected(self, timeout: float = 60.0) -> NodeProc:
        """Wait for the node's hello to be answered: from then on it counts as connected,
        and sync requests for its models are taken (not refused with 503)."""
        wait_for(f"node {self.name} to connect", lambda: "connected" in self.log(), timeout)
        return self

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise AssertionError(f"node {self.name} still runs:\n{self.log()}") from exc

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()


def handler_node(server: Server, token: str, name: str, model: str, *, log: Path) -> NodeProc:
    return NodeProc(server, token, name, "--handler", HANDLER, "--model", model, log=log)


def events(log: Path) -> list[dict[str, Any]]:
    """What the handlers recorded (tests.support.node_handlers.record)."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
