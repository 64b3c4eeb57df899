"""A real headless Chromium (Debian's, never a downloaded one) driven by Playwright, for end-to-end admin tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connections
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, Response, expect, sync_playwright

from tests.support.processes import ROOT, child_env, wait_for

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


# Where the browser tests leave their screenshots, to be looked at after the run (CI keeps the folder).
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "var" / "test-artifacts"))
SCREENSHOTS = ARTIFACTS / "screenshots"


def shot(page: Page, name: str) -> Path:
    """A full-page screenshot of what the user sees now, kept under SCREENSHOTS as <name>.png."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=path, full_page=True)
    return path


def log_in(page: Page, user, password: str = "secret-pass") -> None:
    page.goto("/admin/login/")
    page.get_by_label("Username").fill(user.username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#site-name")).to_be_visible()


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


def new_page(browser: Browser, base_url: str) -> Iterator[Page]:
    context = browser.new_context(base_url=base_url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(15_000)  # generous: CI machines are small and busy
    expect.set_options(timeout=15_000)
    try:
        yield context.new_page()
    finally:
        context.close()


@pytest.fixture
def page(browser, live_server) -> Iterator[Page]:
    yield from new_page(browser, live_server.url)


def collect_errors(page: Page, base_url: str) -> list[str]:
    """Errors the server's pages reported in the browser: console.error calls (a script or stylesheet that
    failed to load among them), uncaught exceptions, and any answer of the server's that is a 4xx or a 5xx.
    The test asserts the list is empty at its end."""
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        url = message.location.get("url") or ""
        if message.type != "error" or (url and not url.startswith(base_url)):
            return
        if url.endswith("/favicon.ico"):  # the browser asks for it by itself, and the admin has none
            return
        errors.append(f"{url}:{message.location.get('lineNumber')}: {message.text}")

    def on_page_error(error: Error) -> None:
        errors.append(f"uncaught {error.name}: {error.message}")

    def on_response(response: Response) -> None:
        if response.status >= 400 and response.url.startswith(base_url) and not response.url.endswith("/favicon.ico"):
            errors.append(f"{response.status} {response.request.method} {response.url}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    page.on("response", on_response)
    return errors


@pytest.fixture
def console_errors(page, live_server) -> list[str]:
    return collect_errors(page, live_server.url)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class MakeRun:
    """`scripts/run.sh` (what `make run` starts: collectstatic, then runserver, qcluster and supervise) with the
    base settings (DEBUG off, as the README runs it) on the test's database, at a free port."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.log = open(log_path, "w")
        env = child_env(PORT=str(self.port), PY=sys.executable)
        env.pop("DJANGO_DEBUG", None)
        self.process = subprocess.Popen(["bash", "scripts/run.sh"], cwd=ROOT, env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)

    def wait_until_serving(self) -> None:
        def serving() -> bool:
            assert self.process.poll() is None, f"scripts/run.sh exited:\n{self.log_path.read_text()}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return True
            except OSError:
                return False

        wait_for(serving, timeout=120, interval=0.2, what="make run's web server")

    def stop(self) -> None:
        if self.process.poll() is None:
            # SIGTERM, which run.sh traps as it does Ctrl+C: a SIGINT can reach it ignored (a shell's background
            # jobs inherit SIGINT ignored, and bash cannot trap a signal ignored on entry).
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        try:  # whatever is left of its process group
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.log.close()


@pytest.fixture
def make_run(tmp_path) -> Iterator[MakeRun]:
    """What `make run` serves (the database migrated, as `make run` does first), started for this test."""
    running = MakeRun(tmp_path / "make-run.log")
    try:
        running.wait_until_serving()
        yield running
    finally:
        running.stop()
        print("--- make run (last lines)\n" + "\n".join(running.log_path.read_text().splitlines()[-30:]))


@pytest.fixture
def make_run_page(browser, make_run) -> Iterator[Page]:
    yield from new_page(browser, make_run.url)
