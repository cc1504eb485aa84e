"""A node process that stops cleanly says bye: its node is gone at once.

On SIGTERM an ``inferq node`` process drains, hands its jobs back and, last, says bye
(``/node/v1/bye``): from then on a sync request for a model only it served is refused
at once (503 ``no_node_connected``, nothing stored), not accepted to wait out the
minute in which a node that went silent still counts as connected. On PostgreSQL the
node says bye to another API server than the one the client talks to.
"""

from __future__ import annotations

import time

import openai
import pytest

from tests.integration.helpers import new_key
from tests.integration.test_node_sync import (  # noqa: F401  (cluster: the fixture)
    CHAT,
    HELLO,
    ROSTER_LAG,
    Cluster,
    cluster,
    no_node_message,
    refused_at_once,
    start_node,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_a_node_stopped_cleanly_stops_counting_at_once(cluster: Cluster) -> None:  # noqa: F811
    key = new_key(cluster.front, "alice")
    with openai.OpenAI(api_key=key, base_url=cluster.front.url + "/v1", max_retries=0) as oai:
        node = start_node(cluster.back)
        try:
            time.sleep(ROSTER_LAG)  # another server's read of the nodes is renewed
            done = oai.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=4)
            assert done.choices[0].message.content == "echo: hi there"
        finally:
            node.stop()
        assert node.proc.returncode == 0, node.log()
        stored = cluster.jobs()
        assert [state for _, state, _ in stored] == ["succeeded"]
        if cluster.front is not cluster.back:
            time.sleep(ROSTER_LAG)
        answer = refused_at_once(
            lambda: oai.chat.completions.create(model=CHAT, messages=HELLO, max_tokens=4)
        )
        no_node_message(answer.json()["error"]["message"])
        assert cluster.jobs() == stored  # nothing was stored
