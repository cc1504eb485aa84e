"""The web console in a real browser: Debian's Chromium driven by Playwright, against a
real ``inferq serve`` with SmolLM2; jobs and batches come from the official SDKs.

The browser is the system's ``chromium`` (``scripts/test`` installs it; Playwright's own
browser downloads are not used). Without it these tests fail, they never skip. Each test
keeps screenshots under ``tests/artifacts/console/`` (ignored by git).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import together
from playwright.sync_api import Browser, BrowserContext, Page, expect, sync_playwright

from tests.integration.helpers import (
    MODEL,
    cancel_quietly,
    new_key,
    start_blocker,
    status,
    wait_status,
    wait_until,
)
from tests.integration.test_openai_batches import chat_line, read_lines, start, wait_ended
from tests.support.server import Server

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "console"
#: how long the page may take to show what the server already knows (live parts refresh
#: every two seconds)
LIVE = 15_000


def chromium_path() -> str:
    """The system's Chromium: ``CHROMIUM`` or ``chromium`` on the PATH; failing loudly."""
    path = os.environ.get("CHROMIUM") or shutil.which("chromium")
    path = path or shutil.which("chromium-browser")
    if not path:
        pytest.fail(
            "no Chromium to drive: install Debian's chromium package (scripts/test does, as "
            "root) or point CHROMIUM at a Chromium binary"
        )
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nconsole screenshots: {ARTIFACTS}")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def context(browser: Browser) -> Iterator[BrowserContext]:
    ctx = browser.new_context(viewport={"width": 1366, "height": 768}, accept_downloads=True)
    try:
        yield ctx
    finally:
        ctx.close()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def assert_accessible(page: Page) -> None:
    """Landmarks, one h1, and a label for every control the page shows."""
    expect(page.locator("main")).to_have_count(1)
    expect(page.locator("h1")).to_have_count(1)
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('input:not([type=hidden]), select, progress')]
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                          && !el.getAttribute('aria-labelledby'))
            .map(el => el.outerHTML)"""
    )
    assert unlabelled == [], unlabelled


def log_in(page: Page, server: Server, key: str) -> None:
    page.goto(f"{server.url}/console/login")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("button", name="Log out")).to_be_visible()


@pytest.fixture(scope="module")
def tenant_a(server: Server) -> str:
    return new_key(server, "console-a")


@pytest.fixture(scope="module")
def tenant_b(server: Server) -> str:
    return new_key(server, "console-b")


@pytest.fixture
def tq_a(server: Server, tenant_a: str) -> Iterator[together.Together]:
    with together.Together(api_key=tenant_a, base_url=server.url) as client:
        yield client


@pytest.fixture
def oai_a(server: Server, tenant_a: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key=tenant_a, base_url=server.url + "/v1") as client:
        yield client


def test_login_refuses_a_wrong_key(context: BrowserContext, server: Server, tenant_a: str) -> None:
    page = context.new_page()
    page.goto(f"{server.url}/console/jobs")
    expect(page).to_have_url(re.compile(r"/console/login\?next="))
    assert_accessible(page)
    page.get_by_label("API key").fill("iq-this-is-not-a-key")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("That API key was not accepted.")
    shot(page, "01-login-refused")
    assert context.cookies() == []

    page.get_by_label("API key").fill(tenant_a)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{server.url}/console/jobs")
    expect(page.get_by_role("heading", level=1)).to_have_text("Jobs")
    (cookie,) = context.cookies()
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and tenant_a not in cookie["value"]
    assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
    assert_accessible(page)
    shot(page, "02-jobs")


def test_a_running_job_is_cancelled_from_its_page(
    context: BrowserContext, server: Server, tenant_a: str, tq_a: together.Together
) -> None:
    job_id = start_blocker(tq_a)
    try:
        page = context.new_page()
        log_in(page, server, tenant_a)
        page.get_by_role("link", name="Queues").click()
        row = page.locator(f'tr[data-model="{MODEL}"][data-class="async"]')
        running = row.locator('[data-cell="running"]')
        expect(running).to_have_text("1", timeout=LIVE)
        assert_accessible(page)
        shot(page, "03-queues-running")

        page.get_by_role("link", name="Jobs").click()
        page.get_by_role("link", name=job_id).click()
        expect(page.locator("#job-state")).to_have_text("running")
        page.once("dialog", lambda dialog: dialog.accept())
        page.get_by_role("button", name="Cancel job").click()
        expect(page.locator("#job-state")).to_have_text("cancelled")
        expect(page.get_by_role("button", name="Cancel job")).to_have_count(0)
        expect(page.locator("#job-error")).to_contain_text("cancelled")
        assert_accessible(page)
        shot(page, "04-job-cancelled")
        assert status(tq_a, job_id).status == "canceled"
        page.get_by_role("link", name="Queues").click()
        expect(running).to_have_text("0", timeout=LIVE)
    finally:
        cancel_quietly(tq_a, job_id)


def test_a_batch_progresses_to_completion_and_its_output_downloads(
    context: BrowserContext,
    server: Server,
    tenant_a: str,
    tq_a: together.Together,
    oai_a: openai.OpenAI,
) -> None:
    # a queued job outranks batch rows: the batch waits at 0 rows until it is cancelled
    blocker = start_blocker(tq_a)
    try:
        batch = start(oai_a, [chat_line(f"row-{i}", f"Count to {i}.") for i in range(4)])
        page = context.new_page()
        log_in(page, server, tenant_a)
        page.goto(f"{server.url}/console/batches")
        row = page.locator(f'tr[data-batch="{batch.id}"]')
        expect(row).to_contain_text("0 done, 0 failed of 4 rows", timeout=LIVE)
        assert_accessible(page)
        shot(page, "05-batch-waiting")
        row.get_by_role("link", name=batch.id).click()
        expect(page.locator("#batch-state")).not_to_have_text("succeeded")
        assert page.locator("progress").first.get_attribute("value") == "0"
    finally:
        cancel_quietly(tq_a, blocker)

    # the page follows the batch by itself, without a reload
    expect(page.locator("#batch-state")).to_have_text("succeeded", timeout=120_000)
    expect(page.locator("#rows-done")).to_have_text("4")
    expect(page.locator("#rows-failed")).to_have_text("0")
    assert page.locator("progress").first.get_attribute("value") == "4"
    assert page.locator("#rate").inner_text() not in ("—", "0.0")
    assert_accessible(page)
    shot(page, "06-batch-succeeded")

    done = wait_ended(oai_a, batch.id)
    assert done.status == "completed" and done.output_file_id is not None
    with page.expect_download() as download_info:
        page.get_by_role("link", name=re.compile(r"^output: ")).click()
    saved = ARTIFACTS / "batch-output.jsonl"
    download_info.value.save_as(saved)
    assert saved.read_bytes() == oai_a.files.content(done.output_file_id).content
    assert sorted(line["custom_id"] for line in read_lines(oai_a, done.output_file_id)) == [
        f"row-{i}" for i in range(4)
    ]

    page.get_by_role("link", name="Throughput").click()
    expect(page.locator("svg[role=img]")).to_have_count(2)
    assert int(page.locator("#jobs-total").inner_text()) >= 4
    assert int(page.locator("#tokens-total").inner_text()) > 0
    assert_accessible(page)
    shot(page, "07-throughput")


def test_another_tenants_job_is_not_found_and_an_admin_sees_it(
    browser: Browser, server: Server, tenant_b: str, tq_a: together.Together
) -> None:
    job_id = tq_a.beta.jig.queue.submit(
        model=MODEL, payload={"messages": [{"role": "user", "content": "Hi."}], "max_tokens": 4}
    ).request_id
    wait_status(tq_a, job_id, {"done"})
    for key, sees in ((tenant_b, False), (server.admin_key(), True)):
        ctx = browser.new_context(viewport={"width": 1366, "height": 768})
        try:
            page = ctx.new_page()
            log_in(page, server, key)
            answer = page.goto(f"{server.url}/console/jobs/{job_id}")
            assert answer is not None
            if sees:
                assert answer.status == 200
                expect(page.locator("#job-state")).to_have_text("succeeded")
                page.goto(f"{server.url}/console/jobs?tenant=console-a")
                expect(page.get_by_role("link", name=job_id)).to_be_visible()
                page.get_by_role("link", name="Keys").click()
                expect(page.locator('tr[data-key^="console-a"]').first).to_be_visible()
                assert_accessible(page)
                shot(page, "09-admin-keys")
                page.get_by_role("link", name="Nodes").click()
                expect(page.get_by_role("heading", level=1)).to_have_text("Nodes")
                assert_accessible(page)
                page.get_by_role("link", name="Webhooks").click()
                expect(page.get_by_role("heading", level=1)).to_have_text("Webhooks")
                assert_accessible(page)
            else:
                assert answer.status == 404
                expect(page.get_by_role("heading", level=1)).to_have_text("Not found")
                shot(page, "08-other-tenant-404")
                page.goto(f"{server.url}/console/jobs")
                expect(page.get_by_role("link", name=job_id)).to_have_count(0)
                assert page.goto(f"{server.url}/console/keys").status == 404  # type: ignore[union-attr]
        finally:
            ctx.close()


def test_logout_clears_the_session(
    context: BrowserContext, browser: Browser, server: Server, tenant_a: str
) -> None:
    page = context.new_page()
    log_in(page, server, tenant_a)
    kept = context.cookies()
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("status")).to_have_text("You are logged out.")
    assert context.cookies() == []
    shot(page, "10-logged-out")
    page.goto(f"{server.url}/console/queues")
    expect(page).to_have_url(re.compile(r"/console/login"))
    # the old cookie, replayed, is no session either
    replay = browser.new_context()
    try:
        replay.add_cookies(kept)  # type: ignore[arg-type]
        again = replay.new_page()
        again.goto(f"{server.url}/console/queues")
        expect(again).to_have_url(re.compile(r"/console/login"))
    finally:
        replay.close()


def test_the_console_answers_without_a_network(server: Server, context: BrowserContext) -> None:
    """Every request a console page makes stays on the server (no CDN, no font host)."""
    page = context.new_page()
    foreign: list[str] = []
    page.on(
        "request",
        lambda request: None if request.url.startswith(server.url) else foreign.append(request.url),
    )
    page.goto(f"{server.url}/console/login")
    wait_until(lambda: page.evaluate("document.readyState") == "complete")
    assert foreign == [] or all(url.startswith("data:") for url in foreign), foreign
