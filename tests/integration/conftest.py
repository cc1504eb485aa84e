"""Fixtures of the integration suite: real ``inferq serve`` processes and SDK clients.

Every module gets its own server (module scope) with the real SmolLM2 engine;
the clients are the official SDKs a user would use. Keep ``max_tokens`` small:
the machine running these tests may have two cores.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
import together

from tests.integration.helpers import new_key, start_server
from tests.support.server import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The default server: the embedded model with its two slots."""
    srv = start_server(tmp_path_factory.mktemp("server"))
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def api_key(server: Server) -> str:
    return new_key(server, "alice")


@pytest.fixture
def tq(server: Server, api_key: str) -> Iterator[together.Together]:
    """Together's client, with its default retries (the server must stop them)."""
    with together.Together(api_key=api_key, base_url=server.url) as client:
        yield client


@pytest.fixture
def oai(server: Server, api_key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=api_key, base_url=server.url + "/v1") as client:
        yield client
