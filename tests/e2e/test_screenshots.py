"""The README's screenshots of the overview, jobs, run and job pages (a job's form with its
interval previewed, and an edit the API refused), on a server of their own so that what the
other browser tests leave behind does not show. Written to docs/screenshots/
only when missing or with UPDATE_SCREENSHOTS=1 (see ``conftest.screenshot``)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from playwright.sync_api import expect

from scheduler_app.store import schema
from tests.servers import Server

from .conftest import ADMIN_TOKEN, api, screenshot


def seed_last_hour(db_path) -> None:
    """An hour of finished runs, written straight to the test's database: runs that really
    ran would take an hour to fill the overview's chart."""
    now = datetime.now(UTC)
    rows = []
    for minute in range(1, 60):
        finished = now - timedelta(minutes=60 - minute, seconds=20)
        counts = {"succeeded": 2 + (minute * 7) % 5 + (4 if 35 <= minute < 44 else 0),
                  "failed": 1 if minute % 17 == 4 else 0,
                  "cancelled": 1 if minute % 23 == 9 else 0}
        for state, count in counts.items():
            for _ in range(count):
                error = None if state != "failed" else {
                    "type": "ConnectionError", "message": "upstream API answered 503",
                    "traceback": "Traceback (most recent call last):\n  ...\n"
                                 "ConnectionError: upstream API answered 503\n"}
                rows.append({
                    "task": "demo.sleep", "kwargs": {"seconds": 1}, "state": state,
                    "attempt": 1, "max_attempts": 1, "retry_backoff": 2.0,
                    "cancel_requested": state == "cancelled", "errors": [error] if error else [],
                    "error": error, "result": {"slept": 1} if state == "succeeded" else None,
                    "progress_done": 10.0, "progress_total": 10.0, "node": "seed",
                    "created_at": finished - timedelta(seconds=1),
                    "scheduled_for": finished - timedelta(seconds=1),
                    "started_at": finished - timedelta(seconds=1), "finished_at": finished})
    engine = sa.create_engine(f"sqlite:///{db_path}")
    try:
        with engine.begin() as conn:
            conn.execute(sa.insert(schema.runs), rows)
    finally:
        engine.dispose()


def test_screenshots_for_the_readme(open_page, server: Server):
    """Realistic content, then the overview, jobs and run pages (see ``screenshot``)."""
    seed_last_hour(server.db_path)
    for job in (
        {"id": "nightly-report", "name": "Nightly report", "task": "demo.sleep",
         "kwargs": {"seconds": 1}, "trigger": {"type": "cron", "expr": "0 2 * * *",
                                               "timezone": "Europe/Paris"}},
        {"id": "hourly-sync", "name": "Hourly sync", "task": "demo.echo",
         "kwargs": {"value": "sync"}, "trigger": {"type": "cron", "expr": "0 * * * 1-5"}},
        {"id": "cache-warmup", "name": "Cache warm-up", "task": "demo.sleep",
         "kwargs": {"seconds": 2, "steps": 4}, "trigger": {"type": "interval", "minutes": 10}},
        {"id": "weekly-digest", "name": "Weekly digest", "task": "demo.echo",
         "kwargs": {"value": "digest"}, "paused": True,
         "trigger": {"type": "cron", "expr": "30 8 * * 1"}},
    ):
        api(server, "POST", "/api/jobs", json=job)
    for job_id in ("hourly-sync", "cache-warmup"):
        api(server, "POST", f"/api/jobs/{job_id}/run")
    api(server, "POST", "/api/runs", json={"task": "demo.fail",
                                          "kwargs": {"message": "report template not found"}})
    long_run = api(server, "POST", "/api/runs", json={
        "task": "demo.sleep", "kwargs": {"seconds": 30, "steps": 60}})

    page = open_page(ADMIN_TOKEN)
    page.goto(f"/runs/{long_run['id']}")
    expect(page.locator(".run-status .progress-percent")).to_have_text(
        re.compile(r"^([5-9]|\d\d) %$"), timeout=15_000)
    expect(page.locator("#log .log-message").first).to_be_visible()
    page.goto("/jobs")
    expect(page.locator('tr[data-job-id="cache-warmup"] .cell-last .badge')).to_have_text(
        "succeeded")
    screenshot(page, "jobs")
    page.goto("/")
    expect(page.locator(".chart")).to_be_visible()
    screenshot(page, "overview")
    page.goto(f"/runs/{long_run['id']}")
    expect(page.locator(".run-status .badge")).to_have_text("running")
    screenshot(page, "run")

    page.goto("/jobs/cache-warmup/edit")
    expect(page.locator("#job-form[data-ready]")).to_have_count(1)
    expect(page.locator("#preview-times li")).to_have_count(5)
    screenshot(page, "job-edit")
    page.goto("/jobs/hourly-sync/edit")
    expect(page.locator("#job-form[data-ready]")).to_have_count(1)
    page.get_by_label("Cron expression").fill("0 9-25 * * 1-5")
    page.get_by_label("Max instances").fill("0")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#mi-error")).not_to_be_empty()
    expect(page.locator("#cron-error")).to_have_text("hour: 25 is out of range 0-23")
    expect(page.locator("#preview-status")).to_have_text("Fix the schedule to see when it fires.")
    page.evaluate("window.scrollTo(0, 0)")
    screenshot(page, "job-error")
    api(server, "POST", f"/api/runs/{long_run['id']}/cancel")
    for job_id in ("nightly-report", "hourly-sync", "cache-warmup", "weekly-digest"):
        api(server, "DELETE", f"/api/jobs/{job_id}")
