"""Browser tests: Debian's Chromium, driven by Playwright, against the app served by gunicorn on
a loopback port.

One server and one browser serve the whole module (starting them is most of the cost); each
test opens its own browser context (its own cookies), logs in through the login form, and
leaves no job behind. Chromium comes from Debian (``tests/e2e/ensure_chromium.sh``, which
``make test`` runs); Playwright never downloads a browser here.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect, sync_playwright

from tests.servers import Server, Servers

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
ADMIN_TOKEN = "admin-e2e-token-7f3a"
VIEWER_TOKEN = "viewer-e2e-token-91c2"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 390, "height": 844}
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"

expect.set_options(timeout=10_000)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with Servers(tmp_path_factory.mktemp("e2e")) as servers:
        app = servers.gunicorn({
            "API_TOKENS": {ADMIN_TOKEN: "admin", VIEWER_TOKEN: "viewer"},
            "WORKER_THREADS": 4,
        })
        app.wait_ready()
        yield app


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: run tests/e2e/ensure_chromium.sh (make test does)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def open_page(browser: Any, server: Server) -> Iterator[Callable[..., Any]]:
    """``open_page(token=None, viewport=DESKTOP)``: a page in a fresh context, logged in with
    ``token`` through the login form when one is given. Uncaught script errors fail the
    test."""
    contexts: list[Any] = []
    errors: list[str] = []

    def open_(token: str | None = None, viewport: dict[str, int] = DESKTOP) -> Any:
        context = browser.new_context(viewport=viewport, base_url=server.base_url,
                                      timezone_id="Europe/Paris", locale="en-GB")
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        if token:
            log_in(page, token)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert not errors, f"script errors in the page: {errors}"


def log_in(page: Any, token: str) -> None:
    page.goto("/login")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(re.compile(r"^http://[^/]+/$"))
    expect(page.get_by_role("heading", name="Overview")).to_be_visible()
    script_started(page)


def script_started(page: Any) -> None:
    """Wait for the page's script to have given its controls their handlers: after a
    navigation a click makes (a form sent), the page's server-rendered buttons show before
    the script (a module, run once the page is parsed) has started, and a click on one then
    does nothing on a busy machine."""
    expect(page.locator("body[data-started]")).to_have_count(1)


def api(server: Server, method: str, path: str, **kwargs: Any) -> Any:
    """A call to the JSON API with the admin token (to set up what a test looks at)."""
    response = server.request(method, path, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                              **kwargs)
    assert response.status_code < 400, (method, path, response.status_code, response.text)
    return response.json() if response.content else None


def screenshot(page: Any, name: str) -> None:
    """Save a page for the README into docs/screenshots/, when asked to (UPDATE_SCREENSHOTS=1)
    or when the file is not there yet, so that test runs leave committed pictures alone."""
    target = SCREENSHOTS / f"{name}.png"
    if os.environ.get("UPDATE_SCREENSHOTS") == "1" or not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(target), full_page=True)
