"""The console's webhooks pages (memory store, fake engine): a tenant's endpoints and
their delivery history, another tenant's endpoint a 404, an admin's view of all."""

from __future__ import annotations

import asyncio
import time

from tests.unit import test_console as base
from tests.unit.test_console import Console

#: the console suite's fixture: an app with the keys of tenants a and b and an admin
console = base.console


def test_a_tenant_sees_its_endpoints_deliveries_and_not_anothers(console: Console) -> None:
    services = console.client.app.state.services  # type: ignore[attr-defined]
    # nothing listens on port 9 of loopback (and a private address is refused): every
    # attempt fails, and the history says why
    mine = asyncio.run(services.webhooks.create(tenant="ta", url="http://127.0.0.1:9/hook"))
    theirs = asyncio.run(services.webhooks.create(tenant="tb", url="https://b.example/hook"))
    console.submit(console.a)
    deadline = time.monotonic() + 20
    while not asyncio.run(services.webhooks.deliveries(mine.id, tenant="ta")):
        assert time.monotonic() < deadline, "no delivery was recorded"
        time.sleep(0.05)

    console.login(console.a)
    listing = console.client.get("/console/webhooks").text
    assert "http://127.0.0.1:9/hook" in listing and "b.example" not in listing
    assert mine.secret not in listing
    page = console.client.get(f"/console/webhooks/{mine.id}")
    assert page.status_code == 200 and "job.succeeded" in page.text
    assert mine.secret not in page.text
    assert console.client.get(f"/console/webhooks/{theirs.id}").status_code == 404

    console.login(console.admin)
    everything = console.client.get("/console/webhooks").text
    assert "127.0.0.1:9" in everything and "b.example" in everything
    assert console.client.get(f"/console/webhooks/{theirs.id}").status_code == 200
