"""The listening socket an API process of ``inferq serve --workers N`` inherits.

The supervisor binds one TCP socket and passes its descriptor to every API process.
Opened as a Unix socket (what uvicorn's own ``fd=`` option does), the connections the
event loop accepts from it keep Nagle's algorithm on, and each response sent in more
than one write waits for the client's delayed ACK (about 40 ms): two API processes
answered 1,400 healthz requests a second where one answered 4,700.
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest
import uvloop

from inferq.cli.serve import inherited_socket


async def _accepted_nodelay(listener: socket.socket) -> int:
    """TCP_NODELAY on a connection the running loop accepted from ``listener``."""
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[int] = loop.create_future()

    class Probe(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            sock = transport.get_extra_info("socket")
            accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            transport.close()

    server = await loop.create_server(Probe, sock=listener)
    port = listener.getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        return await asyncio.wait_for(accepted, 10)
    finally:
        writer.close()
        server.close()


def _listening() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    return sock


@pytest.mark.parametrize("loop_factory", [asyncio.new_event_loop, uvloop.new_event_loop])
def test_connections_accepted_from_the_inherited_socket_send_at_once(
    loop_factory: object,
) -> None:
    with _listening() as parent:
        child = inherited_socket(os.dup(parent.fileno()))
        assert child.family == socket.AF_INET
        with asyncio.Runner(loop_factory=loop_factory) as runner:  # type: ignore[arg-type]
            assert runner.run(_accepted_nodelay(child)) != 0


def test_the_same_descriptor_opened_as_a_unix_socket_keeps_nagle_on() -> None:
    """What the test above guards against (uvicorn's ``fd=``): a check that can fail."""
    with _listening() as parent:
        child = socket.fromfd(parent.fileno(), socket.AF_UNIX, socket.SOCK_STREAM)
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            assert runner.run(_accepted_nodelay(child)) == 0


def test_an_api_process_of_serve_workers_serves_the_socket_it_inherits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``inferq serve --fd N`` (how the supervisor starts each API process) hands the
    inherited descriptor to uvicorn as a TCP socket."""
    import uvicorn
    from typer.testing import CliRunner

    from inferq.cli import app
    from tests.support.server import fake_models_file

    served: list[socket.socket] = []

    def run(server: uvicorn.Server, sockets: list[socket.socket] | None = None) -> None:
        assert sockets is not None
        served.extend(sockets)
        server.started = True

    monkeypatch.setattr(uvicorn.Server, "run", run)
    models = fake_models_file(tmp_path / "models.toml")
    with _listening() as parent:
        fd = os.dup(parent.fileno())
        args = ["serve", "--fd", str(fd), "--no-worker", "--data-dir", str(tmp_path / "data")]
        result = CliRunner().invoke(app, [*args, "--models", str(models)])
        assert result.exit_code == 0, result.output
        assert [(s.fileno(), s.family) for s in served] == [(fd, socket.AF_INET)]
        served[0].close()
