"""A thread run that ignores its timeout, seen in a real browser: the run page, open before
the deadline, shows that it is still running past it (updated live, not only on load), and the
note goes away when the run ends."""

from __future__ import annotations

from playwright.sync_api import expect

from tests.servers import Server

from .conftest import ADMIN_TOKEN, api


def test_the_run_page_says_a_thread_run_runs_on_past_its_timeout(open_page, server: Server):
    page = open_page(ADMIN_TOKEN)
    run = api(server, "POST", "/api/runs", json={"task": "testing.thread_sleep_2s",
                                                  "kwargs": {"seconds": 5}})
    page.goto(f"/runs/{run['id']}")
    note = page.locator(".run-overdue")
    expect(page.locator(".run-status .badge")).to_have_text("running")
    expect(note).to_be_hidden()  # loaded before its deadline: what follows is the live update
    expect(note).to_contain_text("past its 2 s timeout", timeout=10_000)
    expect(note).to_contain_text("it runs on a thread, which cannot be stopped")
    expect(page.locator(".run-status .badge")).to_have_text("succeeded", timeout=15_000)
    expect(note).to_be_hidden()
