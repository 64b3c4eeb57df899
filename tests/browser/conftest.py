"""A real headless Chromium (Debian's, never a downloaded one) driven by Playwright, for end-to-end admin tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, expect, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser(monkeypatch) -> Iterator[Browser]:
    if not CHROMIUM.exists():  # CI installs it (apt install chromium); a bare machine may lack it
        pytest.skip(f"no Chromium at {CHROMIUM}: apt install chromium")
    # Playwright's sync API keeps an asyncio loop running in this thread between its calls, so Django takes
    # the test's ORM calls for calls from async code and refuses them; they are plain synchronous calls.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            launched.close()
            # For the same reason, asgiref keeps the connections the test opened meanwhile apart from the
            # thread's usual ones, and pytest-django never closes them: close them while the loop still runs,
            # or the test database cannot be dropped at the end of the session ("accessed by other users").
            connections.close_all()


@pytest.fixture
def page(browser, live_server) -> Iterator[Page]:
    context = browser.new_context(base_url=live_server.url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)  # generous: CI machines are small and busy
    expect.set_options(timeout=15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def console_errors(page, live_server) -> list[str]:
    """Errors the live server's pages reported in the browser: console.error calls (a script or stylesheet
    that failed to load among them) and uncaught exceptions. The test asserts the list is empty at its end."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        url = message.location.get("url") or ""
        if message.type != "error" or (url and not url.startswith(live_server.url)):
            return
        if url.endswith("/favicon.ico"):  # the browser asks for it by itself, and the admin has none
            return
        errors.append(f"{url}:{message.location.get('lineNumber')}: {message.text}")

    def on_page_error(error: Error) -> None:
        errors.append(f"uncaught {error.name}: {error.message}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    return errors
