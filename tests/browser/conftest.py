"""The web page in a real browser: Debian's Chromium, headless, driven by Playwright.

The server is the launcher exactly as ``make run`` starts it (``tests.support.server.Server``). The
browser is the distribution's Chromium through ``executable_path``: Playwright's own browser
download cannot work on these machines. A missing Chromium fails these tests, never skips them; the
set-up (``make test``) installs it.

Every page a test opens records Content-Security-Policy violations twice over, from the page's own
``securitypolicyviolation`` events and from Chromium's console, and the test fails if there is any:
the page must work under its policy, not merely load. Screenshots go to ``ARTIFACTS`` (not
committed).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright
from playwright.sync_api import Error as PlaywrightError

from cryptofiles.dev.browser import HOW, chromium_path
from tests.support.server import ROOT, Server

pytestmark = pytest.mark.e2e

ARTIFACTS = Path(os.environ.get("CRYPTOFILES_TEST_ARTIFACTS", ROOT / "var" / "test-artifacts"))
PASSWORD = "correct horse battery"
# Limits low enough for the refusals to be reached, high enough for the 200 MiB file.
SERVER_ENV = {"RATE_LIMIT_KEYS": "20/minute", "MAX_UPLOAD_BYTES": str(210 << 20)}

# Runs in every page and frame before the page's own scripts: the policy's violations and every
# change of a progress bar, kept where the test can read them.
WATCH = """
window.__cspViolations = [];
window.__progress = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.__cspViolations.push(`${event.violatedDirective} ${event.blockedURI}`);
});
new MutationObserver((records) => {
  for (const record of records) {
    const item = record.target.closest("li");
    const name = item ? item.querySelector(".name").textContent : "";
    window.__progress.push([name, Number(record.target.getAttribute("value"))]);
  }
}).observe(document, { subtree: true, attributes: true, attributeFilter: ["value"] });
"""


@dataclass
class Watched:
    """A page with what it logged: console errors and warnings, uncaught errors, CSP violations."""

    page: Page
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # uncaught exceptions in the page's scripts

    def violations(self) -> list[str]:
        seen = [m for m in self.console if "Content Security Policy" in m]
        try:
            reported: list[str] = self.page.evaluate("window.__cspViolations")
        except PlaywrightError:  # the page is closed or navigating: the console still counts
            return seen
        return seen + reported


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        pytest.fail(f"no Chromium: {HOW}", pytrace=False)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(executable))
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = Server(tmp_path_factory.mktemp("page"), SERVER_ENV)
    yield server
    server.stop()


@pytest.fixture
def open_page(browser: Browser, server: Server) -> Iterator[Callable[..., Watched]]:
    """``open_page(base=None, **context_options)``: a fresh browser profile on the page, watched.

    ``base``: where the page is opened, when not the server itself (a proxy in front of it)."""
    contexts: list[BrowserContext] = []
    pages: list[Watched] = []

    def open_one(base: str | None = None, **options: Any) -> Watched:
        context = browser.new_context(accept_downloads=True, **options)
        contexts.append(context)
        context.add_init_script(WATCH)
        page = context.new_page()
        watched = Watched(page)

        def on_console(message: ConsoleMessage) -> None:
            if message.type in ("error", "warning"):
                watched.console.append(message.text)

        page.on("console", on_console)
        page.on("pageerror", lambda error: watched.errors.append(str(error)))
        page.goto(f"{base or server.base}/app/")
        page.wait_for_selector("#signin:not([hidden]), #workspace:not([hidden])")
        pages.append(watched)
        return watched

    yield open_one
    try:
        for watched in pages:
            assert watched.violations() == [], "the page broke its Content-Security-Policy"
            assert watched.errors == [], "the page's scripts threw"
    finally:
        for context in contexts:
            context.close()


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"page-{name}.png"), full_page=True)


def register(page: Page, name: str, password: str = PASSWORD) -> None:
    """Create an account through the page's form; the page logs in with it."""
    page.fill("#register-name", name)
    page.fill("#register-password", password)
    page.click("#register-form button[type=submit]")
    page.wait_for_selector("#workspace:not([hidden])")


def log_in(page: Page, name: str, password: str = PASSWORD) -> None:
    page.fill("#login-name", name)
    page.fill("#login-password", password)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#workspace:not([hidden])")


def token_of(page: Page) -> str:
    token = page.evaluate("sessionStorage.getItem('cryptofiles.token')")
    assert isinstance(token, str) and token
    return token
