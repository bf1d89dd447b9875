"""The console in a real browser: Debian's chromium driven by Playwright's async API (never a
downloaded browser), one browser for the module. Log in (a wrong password first), a forged
CSRF token and a cross-site form refused, a ban that the gateway applies at connect at once, the
unban, and the chart drawn. Screenshots go to test-artifacts/console/ (ignored by git)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from mailmoat.limits import CONSOLE_HISTORY_MINUTES
from tests.support.console import PASSWORD, USER, running_console
from tests.support.raw_client import greeting

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "console"

playwright_api = pytest.importorskip("playwright.async_api")
pytestmark = [
    pytest.mark.skipif(shutil.which(CHROMIUM) is None, reason="Debian's chromium is not installed"),
    pytest.mark.asyncio(loop_scope="module"),
]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def browser() -> AsyncIterator[object]:
    async with playwright_api.async_playwright() as driver:
        launched = await driver.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"],
        )  # fmt: skip
        try:
            yield launched
        finally:
            await launched.close()


async def _shot(page: object, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)  # type: ignore[attr-defined]


async def _log_in(page: object, base: str, password: str) -> int:
    await page.goto(f"{base}/login")  # type: ignore[attr-defined]
    await page.fill("input[name=username]", USER)  # type: ignore[attr-defined]
    await page.fill("input[name=password]", password)  # type: ignore[attr-defined]
    async with page.expect_response(lambda r: r.url.endswith("/login")) as answer:  # type: ignore[attr-defined]
        await page.click("button[type=submit]")  # type: ignore[attr-defined]
    status: int = (await answer.value).status
    await page.wait_for_load_state()  # type: ignore[attr-defined]
    return status


async def test_log_in_ban_unban_and_the_chart(browser: object, tmp_path: Path) -> None:
    with running_console(tmp_path) as (gw, port):
        base = f"http://127.0.0.1:{port}"
        context = await browser.new_context()  # type: ignore[attr-defined]
        page = await context.new_page()
        try:
            assert await _log_in(page, base, "not the password") == 403
            assert await page.get_by_role("alert").inner_text() == "Wrong user name or password."
            await _shot(page, "login-refused")
            assert await _log_in(page, base, PASSWORD) == 303
            # the overview's chart: an SVG with a data point per minute sampled
            assert page.url == f"{base}/"
            chart = page.locator("svg#chart")
            await chart.wait_for()
            assert await chart.locator("polyline").count() == 2
            assert await chart.locator("circle.point").count() == CONSOLE_HISTORY_MINUTES
            await _shot(page, "overview")
            # ban from the bans page: the gateway refuses the address at connect at once
            await page.click("nav >> text=Bans")
            await page.fill("input[name=address]", "127.0.0.88")
            await page.fill("input[name=duration]", "600")
            await page.click("button:text('Ban')")
            await page.locator("#bans td", has_text="127.0.0.88").wait_for()
            await _shot(page, "banned")
            reply = await asyncio.to_thread(greeting, gw.port, "127.0.0.88")
            assert reply.startswith(b"421 4.7.0"), reply
            # the refusal shows in the chart: this minute's point counts it
            await page.click("nav >> text=Overview")
            refused = page.locator("svg#chart circle.point").last
            assert int(await refused.get_attribute("data-refused") or 0) >= 1
            await _shot(page, "overview-after-ban")
            await page.click("nav >> text=Bans")
            await page.click("button[aria-label='unban 127.0.0.88']")
            await page.get_by_role("status").wait_for()
            assert "unbanned 127.0.0.88" in await page.get_by_role("status").inner_text()
            assert (await asyncio.to_thread(greeting, gw.port, "127.0.0.88")).startswith(b"220")
            # a forged token in the form: 403, nothing banned
            await page.fill("input[name=address]", "127.0.0.89")
            await page.locator("form[action='/bans'] input[name=csrf_token]").evaluate(
                "e => e.value = 'forged'"
            )
            async with page.expect_response(lambda r: r.url.endswith("/bans")) as answer:
                await page.click("button:text('Ban')")
            assert (await answer.value).status == 403
            assert "bad CSRF token" in await page.content()
            await _shot(page, "csrf-refused")
            assert (await asyncio.to_thread(greeting, gw.port, "127.0.0.89")).startswith(b"220")
        finally:
            await context.close()


async def test_a_form_on_another_site_cannot_ban(browser: object, tmp_path: Path) -> None:
    """The administrator is logged in; a page elsewhere posts a ban form to the console. The
    cookie (SameSite=Strict) does not go with it and its Origin is not the console's: 403."""
    with running_console(tmp_path) as (gw, port):
        base = f"http://127.0.0.1:{port}"
        context = await browser.new_context()  # type: ignore[attr-defined]
        page = await context.new_page()
        try:
            assert await _log_in(page, base, PASSWORD) == 303
            evil = await context.new_page()
            await evil.set_content(
                f'<form method=post action="{base}/bans"><input name=address value=127.0.0.0/8>'
                "<input name=duration value=600><input name=csrf_token value=guess>"
                "<button>go</button></form>"
            )
            async with evil.expect_response(lambda r: r.url.endswith("/bans")) as answer:
                await evil.click("button")
            assert (await answer.value).status == 403
            await _shot(evil, "cross-site-refused")
            assert (await asyncio.to_thread(greeting, gw.port, "127.0.0.90")).startswith(b"220")
        finally:
            await context.close()
