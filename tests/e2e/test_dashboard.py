"""The dashboard in a real browser: log in, create a cron job from the form, run a task and
watch it, cancel, pause and resume, read a traceback, the viewer's read-only view, a phone's
width. The job form's other triggers and editing are in test_job_form.py.

Every wait is Playwright's polling ``expect`` (or ``wait_for_function``) with a timeout; none
is a fixed sleep. The README's screenshots are taken in test_screenshots.py, on a server of
their own.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from playwright.sync_api import expect

from tests.servers import Server

from .conftest import ADMIN_TOKEN, PHONE, VIEWER_TOKEN, api, script_started

RUN_URL = re.compile(r"/runs/(\d+)$")


def run_id_of(page) -> int:
    match = RUN_URL.search(page.url)
    assert match, page.url
    return int(match.group(1))


def test_login_logout_and_a_wrong_token(open_page):
    page = open_page()
    page.goto("/jobs")
    expect(page).to_have_url(re.compile(r"/login\?next=/jobs$"))
    page.get_by_label("API token").fill("not-a-token")
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("#token-error")).to_have_text("This token is not one the server knows.")
    expect(page.get_by_label("API token")).to_have_attribute("aria-invalid", "true")

    page.get_by_label("API token").fill(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/jobs$"))  # back where the visitor was going
    expect(page.locator(".role-chip")).to_have_text("admin")
    assert ADMIN_TOKEN not in str(page.context.cookies())

    script_started(page)
    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(re.compile(r"/login$"))
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))


def test_create_a_cron_job_from_the_form(open_page, server: Server):
    page = open_page(ADMIN_TOKEN)
    page.goto("/jobs")
    page.get_by_role("link", name="New job").click()
    expect(page.get_by_role("heading", name="New job")).to_be_visible()

    page.get_by_label("Task").select_option("demo.sleep")
    expect(page.locator("#task-description")).to_contain_text("Sleep for")
    page.get_by_label("seconds", exact=True).fill("0.2")
    expect(page.get_by_label("steps")).to_have_attribute("placeholder", "default: 10")

    cron = page.get_by_label("Cron expression")
    cron.fill("61 * * * *")  # a bad minute: the preview names the field, nothing is listed
    expect(page.locator("#cron-error")).to_contain_text("minute: 61 is out of range 0-59")
    cron.fill("61 25 * * *")  # two bad fields: both are named
    expect(page.locator("#cron-error")).to_contain_text(
        "minute: 61 is out of range 0-59; hour: 25 is out of range 0-23")
    expect(page.locator("#preview-times li")).to_have_count(0)

    cron.fill("*/15 * * * *")
    page.get_by_label("Time zone").fill("Europe/Paris")
    times = page.locator("#preview-times li time")
    expect(times).to_have_count(5)
    expect(page.locator("#preview-description")).to_have_text(
        "Every 15 minutes (Europe/Paris)")
    expect(page.locator("#cron-error")).to_be_empty()
    fires = [datetime.fromisoformat(t) for t in times.evaluate_all(
        "nodes => nodes.map(n => n.getAttribute('datetime'))")]
    assert all(f.minute % 15 == 0 and f.second == 0 for f in fires)
    assert [b - a for a, b in zip(fires, fires[1:], strict=False)] == [timedelta(minutes=15)] * 4

    page.get_by_label(re.compile(r"^Name")).fill("E2E quarter-hourly")
    page.get_by_label(re.compile(r"^ID")).fill("e2e-quarter")
    page.get_by_role("button", name="Create job").click()

    expect(page).to_have_url(re.compile(r"/jobs\?created=e2e-quarter$"))
    row = page.locator('tr[data-job-id="e2e-quarter"]')
    expect(row).to_contain_text("E2E quarter-hourly")
    expect(row.locator(".cell-trigger")).to_contain_text("Every 15 minutes (Europe/Paris)")
    expect(row.locator(".cell-next time").first).not_to_be_empty()
    expect(page.locator("#flash")).to_contain_text("Created the job E2E quarter-hourly")
    stored = api(server, "GET", "/api/jobs/e2e-quarter")
    assert stored["kwargs"] == {"seconds": 0.2}
    assert stored["trigger"]["expr"] == "*/15 * * * *"

    # The same id again: the API's 409 is shown on the form, nothing changes.
    page.goto("/jobs/new?task=demo.echo")
    page.get_by_label("value").fill('"again"')
    page.get_by_label("Cron expression").fill("0 * * * *")
    page.get_by_label(re.compile(r"^ID")).fill("e2e-quarter")
    page.get_by_role("button", name="Create job").click()
    expect(page.locator(".form-errors")).to_contain_text("already exists")
    api(server, "DELETE", "/api/jobs/e2e-quarter")


def test_run_a_task_now_and_watch_it_to_100_percent(open_page):
    page = open_page(ADMIN_TOKEN)
    page.get_by_role("link", name="Run a task").first.click()
    expect(page.get_by_role("heading", name="Run a task now")).to_be_visible()
    page.get_by_label("Task").select_option("demo.sleep")
    page.get_by_label("seconds", exact=True).fill("3")
    page.get_by_label("steps").fill("3")
    page.get_by_role("button", name="Run now").click()

    expect(page).to_have_url(RUN_URL)
    bar = page.locator(".run-status progress")
    # Seen part-way (33 % or 67 %), then at 100 %, without reloading the page.
    page.wait_for_function(
        "() => { const b = document.querySelector('.run-status progress');"
        " return b.hasAttribute('value') && b.value > 0 && b.value < 100; }", timeout=10_000)
    expect(page.locator(".run-status .badge")).to_have_text("running")
    expect(bar).to_have_attribute("value", "100", timeout=15_000)
    expect(page.locator(".run-status .badge")).to_have_text("succeeded")
    expect(page.locator(".run-status .progress-percent")).to_have_text("100 %")
    expect(page.locator(".run-result .result")).to_contain_text('"slept": 3')
    expect(page.locator("#log .log-message")).to_have_text(["sleeping 3.0 s in 3 steps", "done"])
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    expect(page.get_by_role("button", name="Cancel")).to_be_hidden()


def test_cancel_a_running_run(open_page, server: Server):
    run = api(server, "POST", "/api/runs", json={"task": "demo.sleep",
                                                "kwargs": {"seconds": 60, "steps": 120}})
    page = open_page(ADMIN_TOKEN)
    page.goto(f"/runs/{run['id']}")
    badge = page.locator(".run-status .badge")
    expect(badge).to_have_text("running")

    cancel = page.get_by_role("button", name="Cancel", exact=True)
    cancel.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(f"Cancel run #{run['id']}")
    dialog.get_by_role("button", name="Cancel run").click()

    expect(badge).to_have_text("cancelled")
    expect(cancel).to_be_hidden()
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    assert api(server, "GET", f"/api/runs/{run['id']}")["state"] == "cancelled"


def test_pause_resume_run_now_and_delete_a_job(open_page, server: Server):
    api(server, "POST", "/api/jobs", json={
        "id": "e2e-pausable", "name": "E2E pausable", "task": "demo.echo",
        "kwargs": {"value": 1}, "trigger": {"type": "cron", "expr": "0 4 * * *"}})
    page = open_page(ADMIN_TOKEN)
    page.goto("/jobs")
    row = page.locator('tr[data-job-id="e2e-pausable"]')
    expect(row.locator(".cell-trigger")).to_contain_text("At 04:00")

    # Keyboard only: Tab to the row's Pause button, press Enter.
    pause = row.get_by_role("button", name="Pause")
    for _ in range(60):
        if pause.evaluate("b => b === document.activeElement"):
            break
        page.keyboard.press("Tab")
    else:
        raise AssertionError("Tab never reached the Pause button")
    page.keyboard.press("Enter")
    expect(row.locator(".badge-paused")).to_be_visible()
    expect(row.get_by_role("button", name="Resume")).to_be_focused()
    expect(pause).to_be_hidden()
    assert api(server, "GET", "/api/jobs/e2e-pausable")["paused"] is True
    page.reload()
    expect(row.locator(".badge-paused")).to_be_visible()

    row.get_by_role("button", name="Resume").click()
    expect(row.locator(".badge-paused")).to_be_hidden()
    expect(row.locator(".cell-next time").first).not_to_be_empty()
    assert api(server, "GET", "/api/jobs/e2e-pausable")["next_run_time"] is not None

    row.get_by_role("button", name="Run now").click()
    flash = page.locator("#flash")
    expect(flash).to_contain_text("Started run #")
    flash.get_by_role("link", name="Watch it").click()
    expect(page.locator(".run-status .badge")).to_have_text("succeeded")
    page.go_back()

    row.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Cancel").click()  # changed my mind
    expect(row).to_be_visible()
    row.get_by_role("button", name="Delete").click()
    page.get_by_role("dialog").get_by_role("button", name="Delete job").click()
    expect(row).to_have_count(0)
    assert server.get("/api/jobs/e2e-pausable", headers={
        "Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 404


def test_a_failed_run_shows_its_traceback_and_can_be_retried(open_page, server: Server):
    run = api(server, "POST", "/api/runs", json={"task": "demo.fail",
                                                "kwargs": {"message": "disk on fire"}})
    page = open_page(ADMIN_TOKEN)
    page.goto(f"/runs/{run['id']}")
    expect(page.locator(".run-status .badge")).to_have_text("failed")
    error = page.locator(".run-error")
    expect(error.locator(".error-type")).to_have_text("RuntimeError")
    expect(error.locator(".error-message")).to_have_text("disk on fire")
    expect(error.locator(".traceback")).to_contain_text("Traceback (most recent call last)")
    expect(error.locator(".traceback")).to_contain_text("RuntimeError: disk on fire")

    page.goto("/")
    failures = page.locator(".failure-list")
    expect(failures).to_contain_text("disk on fire")
    failures.locator(f'a[href$="/runs/{run["id"]}"]').click()
    expect(page).to_have_url(re.compile(rf"/runs/{run['id']}$"))

    page.get_by_role("button", name="Retry").click()
    expect(page).not_to_have_url(re.compile(rf"/runs/{run['id']}$"))
    retry = run_id_of(page)
    assert retry > run["id"]
    expect(page.locator(".run-status .badge")).to_have_text("failed")
    assert api(server, "GET", f"/api/runs/{retry}")["kwargs"] == {"message": "disk on fire"}


def test_runs_list_filters_pages_and_updates_live(open_page, server: Server):
    for i in range(52):
        api(server, "POST", "/api/runs", json={"task": "demo.echo", "kwargs": {"value": i}})
    page = open_page(ADMIN_TOKEN)
    page.goto("/runs")
    page.get_by_label("Task").select_option("demo.echo")
    page.get_by_role("button", name="Filter").click()
    expect(page).to_have_url(re.compile(r"/runs\?state=&task=demo.echo$"))
    rows = page.locator("#runs-table tbody tr")
    expect(rows).to_have_count(50)
    page.get_by_role("link", name="Older →").click()
    expect(rows.first).to_be_visible()
    assert rows.count() >= 2

    page.goto("/runs")
    live = api(server, "POST", "/api/runs", json={"task": "demo.sleep",
                                                 "kwargs": {"seconds": 1, "steps": 2}})
    row = page.locator(f'tr[data-run-id="{live["id"]}"]')  # appears without a reload
    expect(row.locator(".badge")).to_have_text("succeeded", timeout=15_000)
    expect(row.locator("progress")).to_have_attribute("value", "100")
    expect(rows.first).to_have_attribute("data-run-id", str(live["id"]))

    page.get_by_label("State").select_option("failed")
    page.get_by_role("button", name="Filter").click()
    states = page.locator("#runs-table tbody .badge")
    expect(states.first).to_be_visible()
    assert set(states.all_inner_texts()) == {"failed"}


def test_a_viewer_sees_everything_and_no_action(open_page, server: Server):
    api(server, "POST", "/api/jobs", json={
        "id": "e2e-viewed", "task": "demo.echo", "kwargs": {"value": 2},
        "trigger": {"type": "cron", "expr": "30 5 * * *"}})
    run = api(server, "POST", "/api/runs", json={"task": "demo.sleep",
                                                "kwargs": {"seconds": 30, "steps": 30}})
    page = open_page(VIEWER_TOKEN)
    expect(page.locator(".role-chip")).to_have_text("viewer")
    for path in ("/", "/jobs", "/runs", f"/runs/{run['id']}", "/jobs/e2e-viewed/edit"):
        page.goto(path)
        expect(page.locator("main h1")).to_be_visible()
        expect(page.locator("[data-action]:not([data-action=logout])")).to_have_count(0)
        expect(page.get_by_role("link", name="New job")).to_have_count(0)
        expect(page.get_by_role("link", name="Run a task")).to_have_count(0)
    page.goto("/jobs")
    expect(page.locator('tr[data-job-id="e2e-viewed"]')).to_contain_text("At 05:30")
    page.goto(f"/runs/{run['id']}")
    expect(page.locator(".run-status .badge")).to_have_text("running")
    page.goto("/jobs/new")
    expect(page.get_by_role("heading", name="Admins only")).to_be_visible()
    api(server, "POST", f"/api/runs/{run['id']}/cancel")
    api(server, "DELETE", "/api/jobs/e2e-viewed")


def test_phone_width_has_no_horizontal_scrolling(open_page, server: Server):
    failed = api(server, "POST", "/api/runs", json={
        "task": "demo.fail", "kwargs": {"message": "a long message " * 12}})
    api(server, "POST", "/api/jobs", json={
        "id": "e2e-phone", "task": "demo.sleep", "kwargs": {"seconds": 1},
        "trigger": {"type": "interval", "hours": 1, "minutes": 30}})
    page = open_page(ADMIN_TOKEN, viewport=PHONE)
    for path in ("/", "/jobs", "/runs", f"/runs/{failed['id']}", "/jobs/new",
                 "/jobs/e2e-phone/edit", "/runs/new?task=demo.sleep", "/login"):
        page.goto(path)
        expect(page.locator("main h1")).to_be_visible()
        widths = page.evaluate(
            "() => [document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], (path, widths)
    api(server, "DELETE", "/api/jobs/e2e-phone")
