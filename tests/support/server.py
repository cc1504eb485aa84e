"""A real inferq server in a subprocess, for integration and acceptance tests."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

DEFAULT_MODEL = "smollm2-135m-instruct"


#: every port :func:`free_port` has handed out in this test process
_HANDED_OUT: set[int] = set()


def free_port(*taken: int) -> int:
    """A port nothing listens on now, none of ``taken``, and none handed out before in
    this test process: a fixture often picks several ports before its servers bind them,
    and the system may hand out the same free port twice meanwhile."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken and port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def fake_models_file(path: Path, *, token_delay: float = 0.0, slots: int = 2) -> Path:
    """A models file serving the deterministic fake engine as ``fake``."""
    path.write_text(
        f'[models.fake]\nengine = "fake"\ncontext_length = 512\nslots = {slots}\n'
        f"token_delay = {token_delay}\n"
    )
    return path


def _env(extra: dict[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFERQ_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def inferq(*args: str, env: dict[str, str] | None = None) -> str:
    """Run the CLI; return its stdout (raises on a non-zero exit)."""
    done = subprocess.run(
        [sys.executable, "-m", "inferq", *args],
        capture_output=True,
        text=True,
        env=_env(env),
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"inferq {' '.join(args)} failed: {done.stdout}\n{done.stderr}")
    return done.stdout


class Server:
    """``inferq serve`` on a free port, with its own data directory."""

    def __init__(
        self,
        data_dir: Path,
        *,
        models_file: Path | None = None,
        env: dict[str, str] | None = None,
        port: int | None = None,
        args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        #: more options of ``inferq serve``
        self.args = args
        self.models_file = models_file
        self.env = dict(env or {})
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = data_dir.parent / f"server-{self.port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        return inferq(*args, "--data-dir", str(self.data_dir), env=self.env)

    def create_key(self, name: str, tenant: str | None = None) -> str:
        extra = ["--tenant", tenant] if tenant else []
        return self.cli("keys", "create", "--name", name, *extra).strip().splitlines()[-1]

    def start(self, timeout: float = 60.0) -> Server:
        args = [
            sys.executable,
            "-m",
            "inferq",
            "serve",
            "--port",
            str(self.port),
            "--data-dir",
            str(self.data_dir),
        ]
        if self.models_file is not None:
            args += ["--models", str(self.models_file)]
        args += self.args
        # The child keeps its own copy of the descriptor; ours is closed at once.
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=_env(self.env)
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def admin_key(self) -> str:
        """The admin key the first start printed (once, on stderr: the server's log)."""
        match = re.search(r"^(iq-\S+)$", self.log(), re.MULTILINE)
        assert match, self.log()
        return match.group(1)

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
