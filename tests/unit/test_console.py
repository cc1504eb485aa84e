"""The web console in-process (memory store and blobs, fake engine): sessions, CSRF,
tenant isolation, the pages' data and the downloads. tests/integration/test_console.py
drives the same pages in Chromium against a real server and model."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from fastapi.testclient import TestClient

from inferq.api.app import create_app
from inferq.api.console.session import COOKIE
from inferq.blobs import MemoryBlobs
from inferq.config import Settings
from inferq.core.keys import KeyService
from inferq.core.ports import Ending
from inferq.core.states import JobState
from inferq.engines.base import ModelSpec
from inferq.engines.fake import FAIL_TRIGGER
from inferq.engines.registry import ModelRegistry
from inferq.store.memory import MemoryStore
from tests.unit.test_openai_batches import content, start, wait

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi there"}], "max_tokens": 5}
#: what the fake engine takes seconds to echo back (a word every 20 ms)
LONG = {"messages": [{"role": "user", "content": "word " * 150}], "max_tokens": 150}


class Console:
    """A TestClient app with three keys: tenant a, tenant b and an admin."""

    def __init__(self, client: TestClient, store: MemoryStore) -> None:
        self.client = client
        self.store = store
        keys = KeyService(store)
        self.a = asyncio.run(keys.create(name="a", tenant="ta"))[1]
        self.b = asyncio.run(keys.create(name="b", tenant="tb"))[1]
        self.admin = asyncio.run(keys.create(name="root", tenant="ops", admin=True))[1]

    def login(self, secret: str) -> httpx.Response:
        self.client.cookies.clear()
        return self.client.post(
            "/console/login", data={"key": secret, "next": "/console/jobs"}, follow_redirects=False
        )

    def csrf(self, path: str = "/console/queues") -> str:
        html = self.client.get(path).text
        match = re.search(r'name="csrf" value="([^"]+)"', html)
        assert match, html
        return match.group(1)

    def submit(self, secret: str, **payload: Any) -> str:
        answer = self.client.post(
            "/v1/queue/submit",
            json={"model": "fake", "payload": {**CHAT, **payload}},
            headers={"authorization": f"Bearer {secret}"},
        )
        assert answer.status_code == 200, answer.text
        request_id: str = answer.json()["requestId"]
        return request_id


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    store = MemoryStore()
    registry = ModelRegistry(
        {
            "fake": ModelSpec(
                name="fake",
                engine="fake",
                context_length=1024,
                slots=1,
                options={"token_delay": 0.02},
            )
        }
    )
    app = create_app(
        Settings(data_dir=tmp_path), store=store, registry=registry, blobs=MemoryBlobs()
    )
    with TestClient(app) as client:
        yield Console(client, store)


def wait_for_state(console: Console, job_id: str, states: set[str]) -> str:
    deadline = time.monotonic() + 20
    while True:
        job = asyncio.run(console.store.get_job(job_id, tenant=None))
        assert job is not None
        if job.state.value in states:
            return job.state.value
        assert not job.state.terminal, f"job {job_id} ended {job.state.value}: {job.error}"
        assert time.monotonic() < deadline, f"job {job_id} is still {job.state.value}"
        time.sleep(0.02)


def test_login_sets_a_strict_http_only_cookie_without_the_key(console: Console) -> None:
    answer = console.login(console.a)
    assert answer.status_code == 303 and answer.headers["location"] == "/console/jobs"
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/console" in cookie
    value = console.client.cookies[COOKIE]
    assert console.a not in value and console.a.split("-", 1)[1][:12] not in value
    page = console.client.get("/console/jobs")
    assert page.status_code == 200 and "tenant ta" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert page.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("secret", ["", "iq-not-a-key"])
def test_a_wrong_key_is_refused(console: Console, secret: str) -> None:
    answer = console.login(secret)
    assert answer.status_code == 401 and "was not accepted" in answer.text
    assert COOKIE not in console.client.cookies


def test_without_a_session_pages_go_to_the_login_and_live_parts_get_401(
    console: Console,
) -> None:
    answer = console.client.get("/console/jobs?state=queued", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/console/login?next=/console/jobs%3Fstate%3Dqueued"
    assert console.client.get("/console/queues", headers={"x-console-live": "1"}).status_code == 401
    console.client.cookies.set(COOKIE, "e30.forged", path="/console")
    assert console.client.get("/console/queues", follow_redirects=False).status_code == 303


def test_login_goes_back_only_to_console_pages(console: Console) -> None:
    for target, expected in [
        ("/console/batches?state=running", "/console/batches?state=running"),
        ("https://evil.example/", "/console/queues"),
        ("//evil.example/console/", "/console/queues"),
        ("/console/login", "/console/queues"),
    ]:
        console.client.cookies.clear()
        answer = console.client.post(
            "/console/login", data={"key": console.a, "next": target}, follow_redirects=False
        )
        assert answer.headers["location"] == expected


def test_a_tampered_or_foreign_cookie_is_no_session(console: Console) -> None:
    console.login(console.a)
    value = console.client.cookies[COOKIE]
    payload, signature = value.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    console.client.cookies.clear()
    console.client.cookies.set(COOKIE, f"{payload}.{flipped}", path="/console")
    assert console.client.get("/console/jobs", follow_redirects=False).status_code == 303


def test_cancel_needs_the_csrf_token_and_the_same_origin(console: Console) -> None:
    job_id = console.submit(console.a, **LONG)
    console.login(console.a)
    token = console.csrf(f"/console/jobs/{job_id}")
    url = f"/console/jobs/{job_id}/cancel"
    assert console.client.post(url, data={}).status_code == 403
    assert console.client.post(url, data={"csrf": token + "x"}).status_code == 403
    foreign = console.client.post(
        url, data={"csrf": token}, headers={"origin": "https://evil.example"}
    )
    assert foreign.status_code == 403
    assert wait_for_state(console, job_id, {"queued", "running", "succeeded"}) != "cancelled"
    done = console.client.post(
        url, data={"csrf": token}, headers={"origin": "http://testserver"}, follow_redirects=False
    )
    assert done.status_code == 303 and done.headers["location"] == f"/console/jobs/{job_id}"
    assert wait_for_state(console, job_id, {"cancelled"}) == "cancelled"
    page = console.client.get(f"/console/jobs/{job_id}").text
    assert 'id="job-state">cancelled' in page and "Cancel job" not in page
    again = console.client.post(url, data={"csrf": token})
    assert again.status_code == 409 and "already cancelled" in again.text


def test_a_tenant_sees_only_its_own_work_and_an_admin_sees_all(console: Console) -> None:
    mine = console.submit(console.a)
    theirs = console.submit(console.b)
    wait_for_state(console, theirs, {"succeeded"})
    wait_for_state(console, mine, {"succeeded"})
    console.login(console.a)
    listing = console.client.get("/console/jobs").text
    assert mine in listing and theirs not in listing
    hidden = console.client.get(f"/console/jobs/{theirs}")
    assert hidden.status_code == 404 and "text/html" in hidden.headers["content-type"]
    assert "echo: hi there" not in hidden.text
    token = console.csrf()
    assert (
        console.client.post(f"/console/jobs/{theirs}/cancel", data={"csrf": token}).status_code
        == 404
    )
    # a tenant's key cannot widen its view with the tenant filter
    assert theirs not in console.client.get("/console/jobs?tenant=tb").text
    assert console.client.get("/console/keys").status_code == 404

    console.login(console.admin)
    everything = console.client.get("/console/jobs").text
    assert mine in everything and theirs in everything
    only_b = console.client.get("/console/jobs?tenant=tb").text
    assert theirs in only_b and mine not in only_b
    detail = console.client.get(f"/console/jobs/{theirs}")
    assert detail.status_code == 200 and "Completion tokens" in detail.text
    assert 'id="usage-completion">3<' in detail.text and "echo: hi there" in detail.text


def test_job_filters_and_a_bad_filter(console: Console) -> None:
    done = console.submit(console.a)
    wait_for_state(console, done, {"succeeded"})
    console.login(console.a)
    assert done in console.client.get("/console/jobs?state=succeeded&model=fake").text
    assert done not in console.client.get("/console/jobs?state=queued").text
    bad = console.client.get("/console/jobs?state=sleeping")
    assert bad.status_code == 400 and "is not a state" in bad.text
    assert console.client.get("/console/jobs?limit=0").status_code == 400
    nul = console.client.get("/console/jobs?model=a%00b")
    assert 400 <= nul.status_code < 500


def test_queues_count_the_tenants_waiting_and_running_jobs(console: Console) -> None:
    blocker = console.submit(console.b, **LONG)
    wait_for_state(console, blocker, {"running"})
    waiting = [console.submit(console.a) for _ in range(2)]
    console.login(console.a)
    part = console.client.get("/console/queues", headers={"x-console-live": "1"}).text
    assert "<html" not in part
    row = re.search(r'data-model="fake" data-class="async".*?</tr>', part, re.S)
    assert row and '"waiting">2<' in row.group(0) and '"running">0<' in row.group(0)
    console.login(console.admin)
    page = console.client.get("/console/queues").text
    row = re.search(r'data-model="fake" data-class="async".*?</tr>', page, re.S)
    assert row and '"waiting">2<' in row.group(0) and '"running">1<' in row.group(0)
    for job_id in [blocker, *waiting]:
        asyncio.run(console.store.finish(job_id, Ending(JobState.CANCELLED), tenant=None, now=0))


def test_throughput_counts_the_jobs_that_ended(console: Console) -> None:
    for _ in range(3):
        wait_for_state(console, console.submit(console.a), {"succeeded"})
    wait_for_state(console, console.submit(console.b), {"succeeded"})
    console.login(console.a)
    page = console.client.get("/console/throughput")
    assert page.status_code == 200
    assert 'id="jobs-total">3<' in page.text and 'id="tokens-total">9<' in page.text
    assert page.text.count("<svg") == 2 and 'role="img"' in page.text
    console.login(console.admin)
    assert 'id="jobs-total">4<' in console.client.get("/console/throughput").text


def batch_lines(*contents: str, max_tokens: int = 5) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"r{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                **CHAT,
                "messages": [{"role": "user", "content": text}],
                "max_tokens": max_tokens,
            },
        }
        for i, text in enumerate(contents)
    ]


def test_a_batch_shows_its_progress_and_downloads_its_output_and_errors(
    console: Console,
) -> None:
    console.client.headers["authorization"] = f"Bearer {console.a}"
    lines = batch_lines("hi there", "hello you", FAIL_TRIGGER)
    batch = wait(console.client, start(console.client, lines)["id"], {"completed"})
    expected = {
        console.client.get(f"/v1/files/{batch[which]}/content").content
        for which in ("output_file_id", "error_file_id")
    }
    assert len(content(console.client, batch["output_file_id"])) == 2
    del console.client.headers["authorization"]

    console.login(console.a)
    listing = console.client.get("/console/batches").text
    assert batch["id"] in listing and "2 done, 1 failed of 3 rows" in listing
    page = console.client.get(f"/console/batches/{batch['id']}").text
    assert 'id="batch-state">succeeded' in page and "data-final" in page
    links = re.findall(r'href="(/console/batches/[^"]+/files/[^"]+)" download>(\w+):', page)
    assert [which for _, which in links] == ["output", "errors"], page
    downloads = [console.client.get(url) for url, _ in links]
    assert all(d.headers["content-disposition"].startswith("attachment;") for d in downloads)
    assert {d.content for d in downloads} == expected

    console.login(console.b)
    assert console.client.get(f"/console/batches/{batch['id']}").status_code == 404
    assert console.client.get(links[0][0]).status_code == 404
    assert batch["id"] not in console.client.get("/console/batches").text


def test_a_running_batch_is_cancelled_from_its_page(console: Console) -> None:
    console.client.headers["authorization"] = f"Bearer {console.a}"
    long_text = LONG["messages"][0]["content"]  # type: ignore[index]
    batch = start(console.client, batch_lines(*[long_text] * 3, max_tokens=150))
    wait(console.client, batch["id"], {"in_progress"})
    del console.client.headers["authorization"]
    console.login(console.a)
    url = f"/console/batches/{batch['id']}"
    assert "Cancel this batch?" in console.client.get(url).text
    cancel = console.client.post(url + "/cancel", data={"csrf": console.csrf(url)})
    assert cancel.status_code == 200 and cancel.url.path == url
    assert re.search(r'id="batch-state">(cancelling|cancelled)<', cancel.text)
    console.client.headers["authorization"] = f"Bearer {console.a}"
    assert wait(console.client, batch["id"], {"cancelled"})["status"] == "cancelled"


def test_admin_creates_and_revokes_keys_and_a_revoked_key_is_logged_out(
    console: Console,
) -> None:
    console.login(console.admin)
    token = console.csrf("/console/keys")
    made = console.client.post("/console/keys", data={"csrf": token, "name": "c", "tenant": "tc"})
    assert made.status_code == 200 and "not shown again" in made.text
    secret = re.search(r'id="new-secret" readonly value="([^"]+)"', made.text)
    assert secret and secret.group(1).startswith("iq-")
    assert "not shown again" not in console.client.get("/console/keys").text
    dup = console.client.post("/console/keys", data={"csrf": token, "name": "c", "tenant": "tc"})
    assert dup.status_code == 400 and "already exists" in dup.text

    other = TestClient(console.client.app)
    other.post("/console/login", data={"key": secret.group(1)})
    assert other.get("/console/jobs", follow_redirects=False).status_code == 200
    key_id = asyncio.run(KeyService(console.store).list())[-1].id
    revoked = console.client.post(f"/console/keys/{key_id}/revoke", data={"csrf": token})
    assert revoked.status_code == 200 and "revoked" not in revoked.url.path
    time.sleep(0.01)
    state = console.client.app.state.console  # type: ignore[attr-defined]
    state.keys.forget()
    assert other.get("/console/jobs", follow_redirects=False).status_code == 303


def test_logout_clears_the_cookie_and_ends_the_session(console: Console) -> None:
    console.login(console.a)
    old = console.client.cookies[COOKIE]
    token = console.csrf()
    assert console.client.post("/console/logout", data={}).status_code == 403
    out = console.client.post("/console/logout", data={"csrf": token}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/console/login?out=1"
    assert COOKIE not in console.client.cookies
    console.client.cookies.set(COOKIE, old, path="/console")
    assert console.client.get("/console/jobs", follow_redirects=False).status_code == 303


def test_unknown_console_pages_are_html_404s(console: Console) -> None:
    console.login(console.a)
    for path in ("/console/nope", "/console/jobs/nope", "/console/batches/nope"):
        answer = console.client.get(path)
        assert answer.status_code == 404 and answer.headers["content-type"].startswith("text/html")
    assert console.client.get("/console/static/console.js").status_code == 200


def test_admins_see_the_nodes_and_revoke_one(console: Console) -> None:
    services = console.client.app.state.services  # type: ignore[attr-defined]
    node, _ = asyncio.run(services.nodes.create(name="gpu-1"))
    console.login(console.a)
    assert console.client.get("/console/nodes").status_code == 404
    assert "Nodes</a>" not in console.client.get("/console/queues").text
    console.login(console.admin)
    page = console.client.get("/console/nodes")
    assert page.status_code == 200 and 'data-node="gpu-1"' in page.text and "never" in page.text
    token = console.csrf("/console/nodes")
    revoked = console.client.post(f"/console/nodes/{node.id}/revoke", data={"csrf": token})
    assert revoked.status_code == 200 and "Revoke gpu-1" not in revoked.text
    assert asyncio.run(services.nodes.list())[0].revoked_at is not None


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "x" * 5000])
def test_hostile_form_and_filter_values_are_client_errors(console: Console, bad: str) -> None:
    console.login(console.admin)
    token = console.csrf("/console/keys")
    before = len(asyncio.run(KeyService(console.store).list()))
    body = f"csrf={token}&name=" + quote(bad.encode("utf-8", "surrogatepass"), safe="")
    made = console.client.post(
        "/console/keys",
        content=body.encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    keys = asyncio.run(KeyService(console.store).list())
    if "\x00" in bad:
        assert made.status_code == 400 and len(keys) == before
    else:  # stored, as text every store keeps (invalid UTF-8 decodes to U+FFFD)
        assert made.status_code == 200 and len(keys) == before + 1
        assert all(key.name.encode("utf-8") for key in keys)
    for path in ("/console/jobs?model=", "/console/batches?tenant=", "/console/jobs?state="):
        answer = console.client.get(path + quote(bad.encode("utf-8", "surrogatepass"), safe=""))
        assert answer.status_code < 500
    refused = console.client.post(
        "/console/login",
        content=b"key=" + quote(bad.encode("utf-8", "surrogatepass"), safe="").encode(),
        headers={"content-type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert refused.status_code == 401


def test_a_malformed_form_is_a_400_page(console: Console) -> None:
    console.login(console.admin)
    broken = console.client.post(
        "/console/keys",
        content=b"--x\r\nbroken",
        headers={"content-type": "multipart/form-data"},
    )
    assert broken.status_code == 400 and broken.headers["content-type"].startswith("text/html")


def test_the_batches_listing_pages_to_older_batches(
    console: Console, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inferq.api.console import batches as console_batches

    monkeypatch.setattr(console_batches, "LISTED", 2)
    console.client.headers["authorization"] = f"Bearer {console.a}"
    made = [start(console.client, batch_lines("hi"))["id"] for _ in range(3)]
    del console.client.headers["authorization"]
    console.login(console.a)

    def rows(html: str) -> list[str]:
        return re.findall(r'<tr data-batch="([^"]+)"', html)

    first = console.client.get("/console/batches").text
    assert rows(first) == [made[2], made[1]]
    older = re.search(r'href="([^"]+)" rel="next"', first)
    assert older and older.group(1) == f"/console/batches?after={made[1]}"
    second = console.client.get(older.group(1)).text
    assert rows(second) == [made[0]] and 'rel="next"' not in second


def test_what_the_app_refuses_before_a_console_route_is_a_console_page(
    console: Console,
) -> None:
    """A NUL in the path (the input guard), a method no route takes, a CSRF token or a
    cookie that is not ASCII: the console's HTML page, never JSON or a 500."""
    console.login(console.admin)
    for method, path, status in [
        ("POST", "/console/jobs/a%00b/cancel", 400),
        ("GET", "/console/jobs/%00", 400),
        ("PUT", "/console/jobs", 405),
        ("POST", "/console/%0D%0Ax", 404),
    ]:
        answer = console.client.request(method, path, data={"csrf": console.csrf()})
        assert answer.status_code == status, (path, answer.text)
        assert answer.headers["content-type"].startswith("text/html"), answer.text
        assert "inferq console" in answer.text and "script-src 'self'" in str(answer.headers)
    bad_csrf = console.client.post("/console/logout", data={"csrf": "é"})
    assert bad_csrf.status_code == 403 and "Not allowed" in bad_csrf.text
    console.client.cookies.clear()
    cookie = {b"cookie": f"{COOKIE}=e30.\xe9".encode("latin-1")}
    answer = console.client.get("/console/queues", headers=cookie, follow_redirects=False)
    assert answer.status_code == 303
