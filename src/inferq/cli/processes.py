"""``inferq serve --workers N``: several API processes on one port, and one engine worker.

The supervisor (the process the user started) binds a listening socket for each of N
API processes, all on the one port (SO_REUSEPORT: the kernel spreads connections over
them, see :func:`bind_each`), and starts the processes, each inheriting its own
(``inferq serve --fd FD --no-worker``) and, unless ``--no-worker``, one ``inferq
worker`` process that loads the models once. Every process opens the same store, so a
request accepted by any API process is run by the worker and answered by the process
that holds the client's connection: the store's wake-ups between processes
(PostgreSQL's NOTIFY, SQLite's datagram bus) tell it when the job ended.

A child that exits on its own is started again after :data:`RESTART_DELAY` seconds;
SIGTERM or SIGINT stops them all (SIGTERM to each, then SIGKILL after
:data:`STOP_GRACE` seconds) and the supervisor exits. A supervisor killed outright
takes its children with it (Linux's parent-death signal).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

log = logging.getLogger("inferq.serve")

#: seconds before a child that exited by itself is started again
RESTART_DELAY = 1.0
#: prctl's option that sets the signal a child gets when its parent dies
PR_SET_PDEATHSIG = 1
#: seconds the children get to finish after SIGTERM before they are killed
STOP_GRACE = 30.0
#: the kernel spreads connections over sockets bound with SO_REUSEPORT (Linux 3.9 and
#: later; on macOS one of them would get every connection)
SPREADS = sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (an error when the port is taken)."""
    return _listen(host, port, reuse_port=False)


def bind_each(host: str, port: int, count: int) -> list[socket.socket]:
    """A listening socket for each of ``count`` API processes, all on ``host:port``.

    With SO_REUSEPORT (Linux) each has its own: the kernel hands each new connection to
    one of them by its addresses, so a burst of connections is spread over the
    processes. One socket shared by all let whichever process woke first take the whole
    burst: 64 keep-alive connections opened at once often all went to one of two
    processes, and the other stayed idle (docs/benchmarks.md). The port is first bound
    alone, so a port in use, by another ``--workers`` server too, is still an error.
    Elsewhere than on Linux (where SO_REUSEPORT may not spread connections): one socket,
    shared.
    """
    first = _listen(host, port, reuse_port=False)
    if count == 1 or not SPREADS:
        return [first]
    port = first.getsockname()[1]  # the port the system chose, for port 0
    first.close()
    socks: list[socket.socket] = []
    try:
        for _ in range(count):
            socks.append(_listen(host, port, reuse_port=True))
    except OSError:
        for sock in socks:
            sock.close()
        raise
    return socks


def _listen(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


@dataclass
class Child:
    name: str
    argv: list[str]
    pass_fds: tuple[int, ...] = ()
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0

    def start(self) -> None:
        self.proc = subprocess.Popen(self.argv, pass_fds=self.pass_fds, preexec_fn=_end_with_parent)
        self.started = time.monotonic()
        log.info("started %s (pid %d)", self.name, self.proc.pid)


@dataclass
class Supervisor:
    children: list[Child]
    _stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> int:
        """Start every child and keep them running until SIGTERM or SIGINT."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self._stopping.set())
        for child in self.children:
            child.start()
        while not self._stopping.wait(0.2):
            for child in self.children:
                assert child.proc is not None
                code = child.proc.poll()
                if code is None or self._stopping.is_set():
                    continue
                log.warning("%s exited with code %s; starting it again", child.name, code)
                if time.monotonic() - child.started < RESTART_DELAY:
                    time.sleep(RESTART_DELAY)
                child.start()
        return self.stop()

    def stop(self) -> int:
        running = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return 0


def _end_with_parent() -> None:
    """In the child, before it runs: SIGTERM when the supervisor dies, even by kill -9
    (Linux's parent-death signal), so no API process outlives it holding the port."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def command(*args: str) -> list[str]:
    """``inferq ARGS`` run by this Python."""
    return [sys.executable, "-m", "inferq", *args]


def serve_processes(
    *,
    socks: Sequence[socket.socket],
    workers: int,
    engine_worker: bool,
    options: Sequence[str],
    worker_options: Sequence[str] = (),
) -> int:
    """Run ``workers`` API processes on ``socks`` (one each, or one shared: see
    :func:`bind_each`) and (``engine_worker``) one worker; ``worker_options`` go to the
    worker alone (its ``--metrics-port``). The sockets stay open here, so connections
    that arrive while an API process is started again wait in its socket's queue."""
    fds = [sock.fileno() for sock in socks]
    children = [
        Child(
            name=f"api process {i + 1}",
            argv=command("serve", "--fd", str(fds[i % len(fds)]), "--no-worker", *options),
            pass_fds=(fds[i % len(fds)],),
        )
        for i in range(workers)
    ]
    if engine_worker:
        children.append(Child(name="worker", argv=command("worker", *options, *worker_options)))
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return Supervisor(children).run()
