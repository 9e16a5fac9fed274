"""A run's concurrency controls on the dashboard's run page, in a real browser: its keys and
why it waits, and a Retry that keeps them (so the retry waits its turn, and a unique key still
held is refused with a message naming the run holding it)."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from tests.servers import Server

from .conftest import ADMIN_TOKEN, api

BODY = {"task": "demo.sleep", "kwargs": {"seconds": 60, "steps": 60},
        "concurrency_key": "tenant:e2e"}


def test_keys_and_why_a_run_waits_and_a_retry_that_keeps_them(open_page, server: Server):
    first = api(server, "POST", "/api/runs", json={**BODY, "unique_key": "e2e:1"})
    second = api(server, "POST", "/api/runs", json=BODY)
    page = open_page(ADMIN_TOKEN)
    page.goto(f"/runs/{second['id']}")
    expect(page.locator(".run-status .badge")).to_have_text("queued")
    expect(page.locator(".cell-concurrency")).to_have_text("tenant:e2e, at most 1 at once")
    expect(page.locator(".cell-waiting")).to_have_text(
        "concurrency key 'tenant:e2e' at its limit (1 of 1 running)")

    api(server, "POST", f"/api/runs/{first['id']}/cancel")
    page.goto(f"/runs/{first['id']}")
    expect(page.locator(".run-status .badge")).to_have_text("cancelled")
    expect(page.locator(".cell-unique-key")).to_have_text("e2e:1")
    page.get_by_role("button", name="Retry").click()
    expect(page).not_to_have_url(re.compile(rf"/runs/{first['id']}$"))
    retry = int(re.search(r"/runs/(\d+)$", page.url).group(1))  # type: ignore[union-attr]
    shown = api(server, "GET", f"/api/runs/{retry}")
    assert (shown["unique_key"], shown["concurrency_key"]) == ("e2e:1", "tenant:e2e")
    # The second run holds the key now, so the retry waits behind it.
    expect(page.locator(".cell-waiting")).to_have_text(
        "concurrency key 'tenant:e2e' at its limit (1 of 1 running)")

    page.goto(f"/runs/{first['id']}")
    page.get_by_role("button", name="Retry").click()
    expect(page.locator("#flash")).to_contain_text(
        f"Could not retry: a run with unique key 'e2e:1' is already queued: run {retry}")
    expect(page).to_have_url(re.compile(rf"/runs/{first['id']}$"))
    for run_id in (second["id"], retry):
        api(server, "POST", f"/api/runs/{run_id}/cancel")
