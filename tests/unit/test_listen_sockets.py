"""``inferq serve --workers N`` listens on one socket per API process (SO_REUSEPORT), so
the kernel spreads even a burst of connections over the processes, and a port in use is
still refused."""

from __future__ import annotations

import contextlib
import select
import socket
import sys

import pytest

from inferq.cli import processes
from inferq.cli.processes import bind, bind_each

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="SO_REUSEPORT's spreading is Linux's"
)


def _accepted(sock: socket.socket) -> int:
    """How many connections wait in ``sock``'s queue (each accepted and closed)."""
    sock.setblocking(False)
    count = 0
    while select.select([sock], [], [], 0.2)[0]:
        try:
            conn, _ = sock.accept()
        except BlockingIOError:
            break
        conn.close()
        count += 1
    return count


def test_a_burst_of_connections_is_spread_over_the_processes_sockets() -> None:
    socks = bind_each("127.0.0.1", 0, 2)
    clients: list[socket.socket] = []
    try:
        assert len(socks) == 2
        ports = {s.getsockname()[1] for s in socks}
        assert len(ports) == 1  # one port
        port = ports.pop()
        for _ in range(64):  # as a client's pool opens its connections: all at once
            clients.append(socket.create_connection(("127.0.0.1", port)))
        each = [_accepted(s) for s in socks]
        assert sum(each) == 64
        # by the connections' addresses: both get some (all 64 to one: 2 in 2^64)
        assert min(each) > 0, each
    finally:
        for sock in [*clients, *socks]:
            sock.close()


def test_a_port_in_use_is_refused_even_by_another_supervisor() -> None:
    socks = bind_each("127.0.0.1", 0, 2)
    try:
        port = socks[0].getsockname()[1]
        with pytest.raises(OSError):
            bind_each("127.0.0.1", port, 2)  # another `serve --workers 2` on the port
        with pytest.raises(OSError):
            bind("127.0.0.1", port)
    finally:
        for sock in socks:
            sock.close()
    with contextlib.closing(bind("127.0.0.1", port)):  # free again once they close
        pass


def test_one_process_gets_one_socket() -> None:
    socks = bind_each("127.0.0.1", 0, 1)
    try:
        assert len(socks) == 1
        assert socks[0].getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT) == 0
    finally:
        socks[0].close()


def test_where_the_kernel_does_not_spread_connections_the_processes_share_one_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(processes, "SPREADS", False)
    socks = bind_each("127.0.0.1", 0, 3)
    try:
        assert len(socks) == 1
    finally:
        socks[0].close()
