"""``inferq serve --workers N``: several API processes on one port, and one engine worker.

The supervisor (the process the user started) binds a listening socket for each of N
API processes, all on the one port (SO_REUSEPORT: the kernel spreads connections over
them, see :func:`bind_each`), and starts the processes, each inheriting its own
(``inferq serve --fd FD --no-worker``) and, unless ``--no-worker``, one ``inferq
worker`` process that loads the models once. Every process opens the same store, so a
request accepted by any API process is run by the worker and answered by the process
that holds the client's connection: the store's wake-ups between processes
(PostgreSQL's NOTIFY, SQLite's datagram bus) tell it when the job ended.

A child that exits on its own is started again after :data:`RESTART_DELAY` seconds. A
child that is alive but stuck is killed and started again too: an API process would keep
its socket, and the kernel would go on handing it its share of new connections, which
nobody answers; a worker would hold its jobs' leases (and on SQLite perhaps the write
lock) while running nothing. Each child writes a byte to a pipe from its event loop every
second (``--heartbeat-fd``, :func:`heartbeat`), and one that has written none for the
stall timeout is killed. An API process is also killed when it writes no first beat within
:data:`START_GRACE` of its start; the worker is watched only from its first beat, which it
writes once its models are loaded (however long they take). SIGTERM or SIGINT stops them
all (SIGTERM to each, then SIGKILL after :data:`STOP_GRACE` seconds) and the supervisor
exits. A supervisor killed outright takes its children with it (Linux's parent-death
signal).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

log = logging.getLogger("inferq.serve")

#: seconds before a child that exited by itself is started again
RESTART_DELAY = 1.0
#: prctl's option that sets the signal a child gets when its parent dies
PR_SET_PDEATHSIG = 1
#: seconds the children get to finish after SIGTERM before they are killed
STOP_GRACE = 30.0
#: seconds a started API process has to write its first heartbeat (it imports, opens the
#: store, maybe migrates it) before it counts as stuck
START_GRACE = 60.0
#: seconds between a child's heartbeats (API processes: uvicorn's notify callback, about
#: as often)
BEAT_EVERY = 1.0
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
    #: seconds without a heartbeat after which the child is stuck; None: not watched
    #: (a watched child is given ``--heartbeat-fd FD``, the write end of a pipe)
    stall_timeout: float | None = None
    #: a watched child has :data:`START_GRACE` seconds for its first heartbeat, or (True)
    #: as long as it takes: watched from its first beat
    from_first_beat: bool = False
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    #: when the last heartbeat came (None: none since the start)
    beat: float | None = None
    _beats: int | None = None

    def start(self) -> None:
        argv, pass_fds = self.argv, self.pass_fds
        write = None
        if self.stall_timeout is not None:
            self.close()
            self._beats, write = os.pipe()
            os.set_blocking(self._beats, False)
            argv, pass_fds = [*argv, "--heartbeat-fd", str(write)], (*pass_fds, write)
        try:
            self.proc = subprocess.Popen(argv, pass_fds=pass_fds, preexec_fn=_end_with_parent)
        finally:
            if write is not None:
                os.close(write)  # the child's alone: it closes with the child
        self.started, self.beat = time.monotonic(), None
        log.info("started %s (pid %d)", self.name, self.proc.pid)

    def stuck(self, now: float) -> bool:
        """Whether the child's heartbeats stopped: none for the stall timeout (before
        the first, for :data:`START_GRACE` after its start, unless :attr:`from_first_beat`)."""
        if self._beats is None or self.stall_timeout is None:
            return False
        try:
            if os.read(self._beats, 4096):
                self.beat = now
        except OSError:  # nothing to read (or the pipe broke: no beats, the child restarts)
            pass
        if self.beat is not None:
            return self.silent_for(now) > self.stall_timeout
        if self.from_first_beat:
            return False
        return self.silent_for(now) > max(START_GRACE, self.stall_timeout)

    def silent_for(self, now: float) -> float:
        """Seconds since the last heartbeat (since the start, before the first)."""
        return now - (self.started if self.beat is None else self.beat)

    def close(self) -> None:
        """Close the read end of the heartbeat pipe (the supervisor is done with it)."""
        if self._beats is not None:
            os.close(self._beats)
            self._beats = None


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
                if self._stopping.is_set():
                    continue
                if code is None:
                    now = time.monotonic()
                    if child.stuck(now):
                        log.error(
                            "%s (pid %d) sent no heartbeat for %.0f s: its event loop is "
                            "stuck; killing it",
                            child.name,
                            child.proc.pid,
                            child.silent_for(now),
                        )
                        child.proc.kill()  # seen as exited next turn, and started again
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
        for child in self.children:
            child.close()
        return 0


def _end_with_parent() -> None:
    """In the child, before it runs: SIGTERM when the supervisor dies, even by kill -9
    (Linux's parent-death signal), so no API process outlives it holding the port."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def heartbeat(fd: int) -> Callable[[], Awaitable[None]]:
    """What a child runs on its event loop to tell the supervisor it is not stuck: a
    byte to the pipe ``fd``. Never blocks (a full pipe: the supervisor has enough to
    read) and never fails (a closed one: the supervisor is gone, and this process with
    it)."""
    os.set_blocking(fd, False)

    async def beat() -> None:
        with contextlib.suppress(OSError):
            os.write(fd, b".")

    return beat


async def beat_forever(fd: int, every: float = BEAT_EVERY) -> None:
    """Heartbeats to the pipe ``fd`` from this event loop every ``every`` seconds, until
    cancelled (the worker's; an API process beats through uvicorn)."""
    beat = heartbeat(fd)
    while True:
        await beat()
        await asyncio.sleep(every)


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
    stall_timeout: float = 15.0,
) -> int:
    """Run ``workers`` API processes on ``socks`` (one each, or one shared: see
    :func:`bind_each`) and (``engine_worker``) one worker; ``worker_options`` go to the
    worker alone (its ``--metrics-port``). The sockets stay open here, so connections
    that arrive while an API process is started again wait in its socket's queue. A
    child without a heartbeat for ``stall_timeout`` seconds is killed and started again
    (the worker once it has sent its first)."""
    fds = [sock.fileno() for sock in socks]
    children = [
        Child(
            name=f"api process {i + 1}",
            argv=command("serve", "--fd", str(fds[i % len(fds)]), "--no-worker", *options),
            pass_fds=(fds[i % len(fds)],),
            stall_timeout=stall_timeout,
        )
        for i in range(workers)
    ]
    if engine_worker:
        children.append(
            Child(
                name="worker",
                argv=command("worker", *options, *worker_options),
                stall_timeout=stall_timeout,
                from_first_beat=True,  # loading its models takes as long as it takes
            )
        )
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    return Supervisor(children).run()
