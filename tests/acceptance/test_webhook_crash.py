"""A webhook survives ``kill -9`` of the server between its event and its delivery.

The endpoint's receiver is down when the job ends, so the delivery is attempted,
fails and waits for its retry; the server is killed with SIGKILL; the receiver comes
up; the restarted server delivers the event with the webhook-id it had before the kill
(the one ``inferq webhooks deliveries`` showed), signed so the openai SDK verifies it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import together

from tests.integration.helpers import (
    CLI_ENV,
    ONE_SLOT_MODELS,
    new_key,
    submit,
    wait_status,
    wait_until,
)
from tests.support.receiver import Receiver, unwrap
from tests.support.server import Server, free_port

pytestmark = pytest.mark.integration


def test_a_delivery_pending_at_a_kill_is_made_after_the_restart(tmp_path: Path) -> None:
    models = tmp_path / "models.toml"
    models.write_text(ONE_SLOT_MODELS)
    env = {**CLI_ENV, "INFERQ_WEBHOOK_ALLOW_PRIVATE": "true",
           "INFERQ_WEBHOOK_RETRY_SECONDS": "1"}  # fmt: skip
    server = Server(tmp_path / "data", models_file=models, env=env).start()
    port = free_port()  # nothing listens there yet
    receiver = Receiver(tmp_path, port=port)
    try:
        lines = server.cli("webhooks", "create", "--tenant", "crash", "--url", receiver.url)
        *_, endpoint_id, secret = lines.strip().splitlines()
        with together.Together(api_key=new_key(server, "crash"), base_url=server.url) as tq:
            job_id = submit(tq, {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
            wait_status(tq, job_id, {"done"})

        def tried() -> str | None:
            history = server.cli("webhooks", "deliveries", endpoint_id)
            return history if re.search(r"pending\W+[1-9]", history) else None

        history = wait_until(tried, timeout=60, what="a failed first attempt")
        match = re.search(r"wh_[0-9a-f]+", history)
        assert match, history
        server.kill()
        receiver.start()
        server.start()
        [request] = receiver.wait_for(1)
        assert request["headers"]["webhook-id"] == match.group(0)
        event = unwrap(request, secret)
        assert (event.type, event.data.id) == ("job.succeeded", job_id)
        wait_until(
            lambda: "delivered" in server.cli("webhooks", "deliveries", endpoint_id),
            timeout=30,
            what="the delivery recorded as delivered",
        )
    finally:
        server.stop()
        receiver.stop()
