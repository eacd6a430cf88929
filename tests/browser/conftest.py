"""Browser tests: the page and the dashboard in headless Chromium, driven by Playwright.

They run against the integration tests' stack (a real redis-server, gunicorn with the
production config, ./worker.sh) and the machine's own Chromium (CHROMIUM, by default
Debian's /usr/bin/chromium): Playwright's own browser download is never used. Without that
Chromium, or without Playwright, every test here is skipped with the reason. A failed test
leaves a screenshot of its page in test-artifacts/.
"""

from __future__ import annotations

import importlib.util
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import Envelope

from app.redis_server import free_port
from tests.integration.conftest import (  # noqa: F401  (fixtures used by the browser tests)
    ROOT,
    SERVICES,
    TEST_STARTED,
    Child,
    _stop_leftover_children,
    logs_dir,
    redis_url,
    running_workers,
    server,
    tail,
)

HERE = Path(__file__).resolve().parent
CHROMIUM = Path(os.environ.get("CHROMIUM", "/usr/bin/chromium"))
ARTIFACTS = ROOT / "test-artifacts"
# Headless and quiet: no GPU, no background traffic, no updates, no first-run or sync. The
# sandbox needs user namespaces that containers (and root) rarely have. Playwright starts
# every browser with a fresh temporary profile (its own --user-data-dir).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
TIMEOUT_MS = 20_000
NO_PLAYWRIGHT = "Playwright is not installed (pipenv sync --dev): browser tests skipped"


def missing_browser() -> str | None:
    """Return why the browser tests cannot run here, or None when they can."""
    if importlib.util.find_spec("playwright") is None:
        return NO_PLAYWRIGHT
    if not os.access(CHROMIUM, os.X_OK):
        return f"Chromium not found at {CHROMIUM}: browser tests skipped (apt-get install chromium)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every browser test, before any server starts, when there is no browser to drive."""
    reason = missing_browser()
    if reason is None:
        return
    for item in items:
        if HERE in Path(item.path).parents:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Save a screenshot of a failed test's page; attach the logs of the services it used."""
    report = yield
    if call.when == "setup":
        item.stash[TEST_STARTED] = call.start
    if report.failed and call.when in {"setup", "call"}:
        page = getattr(item, "funcargs", {}).get("page")
        if page is not None and not page.is_closed():
            ARTIFACTS.mkdir(exist_ok=True)
            path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', item.nodeid)}.png"
            page.screenshot(path=str(path), full_page=True)
            report.sections.append(("screenshot", str(path)))
        since = item.stash.get(TEST_STARTED, call.start)
        for service in SERVICES:
            if service.stopped is None or service.stopped >= since:
                report.sections.append((f"log of {service.name}: {service.log}", tail(service.log)))
    return report


class Mailbox:
    """An SMTP handler that keeps what it receives."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Envelope) -> str:
        """Keep the message and accept it."""
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture(scope="session")
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    """Run an SMTP server for the email job; return what it receives and its port."""
    handler = Mailbox()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
def workers(redis_url: str, logs_dir: Path, mailbox: tuple[Mailbox, int]) -> Iterator[Child]:  # noqa: F811
    """Run `./worker.sh 2`, sending mail to the test's SMTP server."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SMTP_HOST", "127.0.0.1")
        patch.setenv("SMTP_PORT", str(mailbox[1]))
        patch.setenv("MAIL_SENDER", "jobs@example.test")
        with running_workers(redis_url, logs_dir, count=2) as child:
            yield child


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Return a headless Chromium, the machine's own."""
    from playwright.sync_api import expect, sync_playwright

    # Jobs queue behind each other's on the two workers: wait for them as long as for pages.
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, server: str) -> Iterator[Any]:  # noqa: F811
    """Return a new tab in a fresh context, its base URL the test server's."""
    context = browser.new_context(base_url=server, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    # What the page's Content-Security-Policy blocked: the tests expect nothing.
    context.add_init_script(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " (e) => window.__violations.push(e.violatedDirective));"
    )
    tab = context.new_page()
    try:
        yield tab
    finally:
        context.close()


@pytest.fixture
def dialogs(page: Any) -> list[str]:
    """Return the messages of every alert, confirm or prompt the page opens (each is dismissed)."""
    seen: list[str] = []

    def dismiss(dialog: Any) -> None:
        seen.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", dismiss)
    return seen


def wait_until(check: Any, timeout: float = 20.0, interval: float = 0.1) -> Any:
    """Return check()'s first truthy value; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g}s; last value: {value!r}")
        time.sleep(interval)
