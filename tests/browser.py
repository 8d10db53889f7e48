"""A real Chromium (Playwright, sync API) against the live server, for the browser tests.

Debian's chromium at /usr/bin/chromium; `playwright install` is never needed. Playwright's
sync API runs an event loop in the test thread, so Django's ORM calls from this thread
need DJANGO_ALLOW_ASYNC_UNSAFE while the browser is up (the live server's own thread is
unaffected). Loaded as a plugin (pyproject.toml: ``-p tests.browser``).

Screenshots go to SENDMSG_SCREENSHOT_DIR (default test-artifacts/screenshots in the
repository, ignored by git); README.md shows copies of them from docs/screenshots.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.peers.processes import REPO_ROOT

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = Path(
    os.environ.get("SENDMSG_SCREENSHOT_DIR", Path(REPO_ROOT) / "test-artifacts" / "screenshots")
)


@pytest.fixture
def allow_orm_beside_playwright(monkeypatch) -> None:
    """Browser test modules name it in ``pytest.mark.usefixtures``, which sets it up before
    the database fixtures and tears it down after them."""
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


@pytest.fixture
def chromium(live_server) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def new_page(browser: Browser, live_server, **options) -> tuple[BrowserContext, Page]:
    """A fresh browser profile (its own cookies) on the live server, and a page in it."""
    context = browser.new_context(base_url=live_server.url, **options)
    context.set_default_timeout(10_000)
    return context, context.new_page()


@pytest.fixture
def chromium_page(chromium, live_server) -> Iterator[Page]:
    context, page = new_page(chromium, live_server)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    try:
        yield page
    finally:
        context.close()


def screenshot(page: Page, name: str) -> Path:
    """Save the whole page as <SCREENSHOTS>/<name>.png and return the path."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} looks empty"
    return path


def log_in(page: Page, username: str, password: str) -> None:
    page.goto("/login/")
    page.get_by_label("Email or username").fill(username)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Log in").click()
