"""The job form in a real browser: creating jobs with an interval (with start and end) and a
one-off date, editing a job's schedule, arguments and options, an edit the API rejects (each
problem shown by its field, the job unchanged), a viewer seeing every field read-only, and the
odd stored jobs: a cron trigger given field by field, a task this deployment lacks.

The browser runs in Europe/Paris (see conftest), so the times typed into the form are Paris
times and the API must store the same instants. Waits are Playwright's polling ``expect``;
``#job-form[data-ready]`` is set once a job's form has been filled and previewed.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from playwright.sync_api import expect

from scheduler_app.store import Database, Store
from tests.servers import Server

from .conftest import ADMIN_TOKEN, VIEWER_TOKEN, api

PARIS = ZoneInfo("Europe/Paris")
LOCAL = "%Y-%m-%dT%H:%M:%S"  # a datetime-local input's value


def shown_times(page) -> list[datetime]:
    return [datetime.fromisoformat(t) for t in page.locator("#preview-times li time").evaluate_all(
        "nodes => nodes.map(n => n.getAttribute('datetime'))")]


def tomorrow_at(hour: int) -> datetime:
    return (datetime.now(PARIS) + timedelta(days=1)).replace(hour=hour, minute=0, second=0,
                                                              microsecond=0)


def open_job(page, job_id: str) -> None:
    page.goto(f"/jobs/{job_id}/edit")
    expect(page.locator("#job-form[data-ready]")).to_have_count(1)


def test_create_an_interval_job_with_a_start_and_an_end(open_page, server: Server):
    page = open_page(ADMIN_TOKEN)
    page.goto("/jobs/new?task=demo.sleep")
    page.get_by_label("seconds", exact=True).fill("0.1")
    page.get_by_role("radio", name="Interval").check()
    expect(page.get_by_label("Cron expression")).to_be_hidden()
    expect(page.locator("#preview-status")).to_have_text("Give an interval to see when it fires.")

    page.get_by_label("Hours", exact=True).fill("1")
    page.get_by_label("Minutes", exact=True).fill("30")
    start = tomorrow_at(8)
    end = start + timedelta(hours=4)  # room for 08:00, 09:30 and 11:00 only
    page.get_by_label(re.compile(r"^Start")).fill(start.strftime(LOCAL))
    page.get_by_label(re.compile(r"^End")).fill(end.strftime(LOCAL))
    expect(page.locator("#preview-description")).to_have_text("Every 1 hour 30 minutes")
    expect(page.locator("#preview-times li")).to_have_count(3)
    assert shown_times(page) == [start, start + timedelta(minutes=90),
                                 start + timedelta(minutes=180)]

    page.get_by_label("Minutes", exact=True).fill("-5")  # judged by the API, named by its field
    expect(page.locator("#iv-minutes-error")).to_have_text(
        "must be a finite number, not negative")
    expect(page.locator("#preview-times li")).to_have_count(0)
    page.get_by_label("Minutes", exact=True).fill("30")
    expect(page.locator("#preview-times li")).to_have_count(3)

    page.get_by_label(re.compile(r"^Name")).fill("E2E ninety minutes")
    page.get_by_label(re.compile(r"^ID")).fill("e2e-interval")
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(re.compile(r"/jobs\?created=e2e-interval$"))
    row = page.locator('tr[data-job-id="e2e-interval"]')
    expect(row.locator(".cell-trigger")).to_have_text("Every 1 hour 30 minutes")
    stored = api(server, "GET", "/api/jobs/e2e-interval")
    trigger = stored["trigger"]
    assert (trigger["type"], trigger["hours"], trigger["minutes"]) == ("interval", 1, 30)
    assert datetime.fromisoformat(trigger["start_date"]) == start
    assert datetime.fromisoformat(trigger["end_date"]) == end
    assert datetime.fromisoformat(stored["next_run_time"]) == start
    assert stored["kwargs"] == {"seconds": 0.1}
    api(server, "DELETE", "/api/jobs/e2e-interval")


def test_create_a_one_off_date_job(open_page, server: Server):
    page = open_page(ADMIN_TOKEN)
    page.goto("/jobs/new?task=demo.echo")
    page.get_by_label("value").fill('"once"')
    page.get_by_role("radio", name="Once").check()
    expect(page.locator("#preview-status")).to_have_text(
        "Pick a date and time to see when it fires.")
    page.get_by_label("Run at").fill("2020-01-01T10:00:00")
    expect(page.locator("#preview-status")).to_have_text(
        "This time has passed: it would never fire.")
    page.get_by_label(re.compile(r"^ID")).fill("e2e-once")
    page.get_by_role("button", name="Create job").click()  # the API refuses a past date
    expect(page.locator("#run-date-error")).to_have_text("is in the past")
    expect(page.get_by_label("Run at")).to_have_attribute("aria-invalid", "true")
    assert server.get("/api/jobs/e2e-once", headers={
        "Authorization": f"Bearer {ADMIN_TOKEN}"}).status_code == 404

    when = tomorrow_at(10)
    page.get_by_label("Run at").fill(when.strftime(LOCAL))
    expect(page.locator("#preview-times li")).to_have_count(1)
    assert shown_times(page) == [when]
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(re.compile(r"/jobs\?created=e2e-once$"))
    expect(page.locator('tr[data-job-id="e2e-once"] .cell-trigger')).to_contain_text("Once at")
    stored = api(server, "GET", "/api/jobs/e2e-once")
    assert stored["trigger"]["type"] == "date"
    assert datetime.fromisoformat(stored["trigger"]["run_date"]) == when
    assert datetime.fromisoformat(stored["next_run_time"]) == when
    api(server, "DELETE", "/api/jobs/e2e-once")


def test_edit_a_jobs_name_then_its_schedule_arguments_and_options(open_page, server: Server):
    api(server, "POST", "/api/jobs", json={
        "id": "e2e-edited", "name": "E2E edited", "task": "demo.echo",
        "kwargs": {"value": "one"}, "trigger": {"type": "cron", "expr": "0 4 * * *"}})
    before = api(server, "GET", "/api/jobs/e2e-edited")
    page = open_page(ADMIN_TOKEN)
    patches: list[object] = []
    page.on("request", lambda r: patches.append(r.post_data_json)
            if r.method == "PATCH" else None)
    page.goto("/jobs")
    page.locator('tr[data-job-id="e2e-edited"]').get_by_role(
        "link", name="Edit E2E edited").click()
    expect(page.get_by_role("heading", name="E2E edited")).to_be_visible()
    expect(page.locator("#job-form[data-ready]")).to_have_count(1)
    expect(page.get_by_role("radio", name="Cron")).to_be_checked()
    expect(page.get_by_label("Cron expression")).to_have_value("0 4 * * *")
    expect(page.get_by_label("value")).to_have_value('"one"')
    expect(page.get_by_label("Task")).to_be_disabled()
    expect(page.locator("#preview-times li")).to_have_count(5)

    # Only what changed is sent: a new name does not reschedule the untouched trigger.
    page.get_by_label(re.compile(r"^Name")).fill("E2E renamed")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#flash")).to_contain_text("Saved E2E renamed: At 04:00")
    expect(page.get_by_role("heading", name="E2E renamed")).to_be_visible()
    assert patches == [{"name": "E2E renamed"}]
    renamed = api(server, "GET", "/api/jobs/e2e-edited")
    assert renamed["next_run_time"] == before["next_run_time"]
    assert renamed["trigger"] == before["trigger"]

    # The schedule (cron to every 10 minutes), the arguments and the options.
    expect(page.locator("#job-form[data-ready]")).to_have_count(1)
    page.get_by_role("radio", name="Interval").check()
    page.get_by_label("Minutes", exact=True).fill("10")
    expect(page.locator("#preview-description")).to_have_text("Every 10 minutes")
    expect(page.locator("#preview-times li")).to_have_count(5)
    page.get_by_label("value").fill('{"n": 2}')
    page.get_by_label("Max instances").fill("3")
    page.get_by_label(re.compile(r"^Misfire grace time")).fill("120")
    page.get_by_label("Missed fires").select_option("false")
    saved_at = datetime.now().astimezone()
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#flash")).to_contain_text("Saved E2E renamed: Every 10 minutes")
    stored = api(server, "GET", "/api/jobs/e2e-edited")
    assert (stored["trigger"]["type"], stored["trigger"]["minutes"]) == ("interval", 10)
    assert stored["kwargs"] == {"value": {"n": 2}}
    assert (stored["max_instances"], stored["misfire_grace_time"], stored["coalesce"]) == (
        3, 120, False)
    next_run = datetime.fromisoformat(stored["next_run_time"])
    assert timedelta(minutes=9) < next_run - saved_at < timedelta(minutes=11)

    # The page, loaded again, shows what is stored; saving it unchanged sends nothing.
    expect(page.locator("#job-form[data-ready]")).to_have_count(1)
    expect(page.get_by_role("radio", name="Interval")).to_be_checked()
    expect(page.get_by_label("Minutes", exact=True)).to_have_value("10")
    expect(page.get_by_label("Max instances")).to_have_value("3")
    expect(page.get_by_label("Missed fires")).to_have_value("false")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#flash")).to_contain_text("Nothing to save")
    assert len(patches) == 2
    api(server, "DELETE", "/api/jobs/e2e-edited")


def test_a_rejected_edit_shows_each_problem_by_its_field_and_changes_nothing(
        open_page, server: Server):
    api(server, "POST", "/api/jobs", json={
        "id": "e2e-rejected", "name": "E2E rejected", "task": "demo.sleep",
        "kwargs": {"seconds": 1}, "trigger": {"type": "interval", "minutes": 5}})
    before = api(server, "GET", "/api/jobs/e2e-rejected")
    page = open_page(ADMIN_TOKEN)
    open_job(page, "e2e-rejected")
    expect(page.get_by_label("Minutes", exact=True)).to_have_value("5")

    page.get_by_label("seconds", exact=True).fill("90000")  # the task's limit is 86400
    page.get_by_label("Max instances").fill("0")
    page.get_by_role("radio", name="Cron").check()
    page.get_by_label("Cron expression").fill("0 25 * * *")
    expect(page.locator("#cron-error")).to_have_text("hour: 25 is out of range 0-23")
    page.get_by_role("button", name="Save changes").click()

    summary = page.locator(".form-errors")
    expect(summary).to_contain_text("Please fix these 3 problems")
    expect(page.locator("#arg-seconds-error")).to_have_text(
        "Input should be less than or equal to 86400")
    expect(page.locator("#mi-error")).to_have_text("Input should be greater than or equal to 1")
    expect(page.locator("#cron-error")).to_have_text("hour: 25 is out of range 0-23")
    for label in ("Max instances", "Cron expression"):
        expect(page.get_by_label(label)).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Max instances")).to_have_value("0")  # what was typed stays
    assert api(server, "GET", "/api/jobs/e2e-rejected") == before

    page.get_by_label("Max instances").fill("2")  # fixed: the same form saves
    page.get_by_label("seconds", exact=True).fill("2")
    page.get_by_label("Cron expression").fill("0 5 * * *")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#flash")).to_contain_text("Saved E2E rejected: At 05:00")
    stored = api(server, "GET", "/api/jobs/e2e-rejected")
    assert (stored["max_instances"], stored["kwargs"], stored["trigger"]["expr"]) == (
        2, {"seconds": 2}, "0 5 * * *")
    api(server, "DELETE", "/api/jobs/e2e-rejected")


def test_a_viewer_sees_every_field_of_a_job_read_only(open_page, server: Server):
    end = tomorrow_at(23)
    api(server, "POST", "/api/jobs", json={
        "id": "e2e-viewed-interval", "name": "E2E viewed", "task": "demo.sleep",
        "kwargs": {"seconds": 2, "steps": 4},
        "trigger": {"type": "interval", "hours": 2, "end_date": end.isoformat()},
        "max_instances": 2, "coalesce": False, "misfire_grace_time": 30})
    page = open_page(VIEWER_TOKEN)
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method != "GET" else None)
    page.goto("/jobs")
    page.get_by_role("link", name="E2E viewed").click()
    expect(page.locator("#job-form[data-ready]")).to_have_count(1)
    expect(page.get_by_role("heading", name="E2E viewed")).to_contain_text("read-only")

    values = {
        page.get_by_label("Task"): "demo.sleep",
        page.get_by_label("seconds", exact=True): "2",
        page.get_by_label("steps"): "4",
        page.get_by_label("Hours", exact=True): "2",
        # the browser drops ":00" seconds from a datetime-local value
        page.get_by_label(re.compile(r"^End")): re.compile(end.strftime("^%Y-%m-%dT%H:%M(:00)?$")),
        page.get_by_label(re.compile(r"^Name")): "E2E viewed",
        page.get_by_label(re.compile(r"^ID")): "e2e-viewed-interval",
        page.get_by_label("Max instances"): "2",
        page.get_by_label(re.compile(r"^Misfire grace time")): "30",
        page.get_by_label("Missed fires"): "false",
    }
    for field, value in values.items():
        expect(field).to_have_value(value)
        expect(field).to_be_disabled()
    expect(page.get_by_role("radio", name="Interval")).to_be_checked()
    expect(page.get_by_role("radio", name="Cron")).to_be_disabled()
    expect(page.get_by_label(re.compile(r"^Start"))).not_to_have_value("")
    expect(page.locator("#job-form button:visible")).to_have_count(0)  # no save that would fail
    expect(page.get_by_role("link", name="Back to jobs")).to_be_visible()
    # The preview is an admin's POST: a viewer is shown the job's next run instead.
    expect(page.locator("#preview-title")).to_have_text("Next run")
    expect(page.locator("#preview-description")).to_have_text("Every 2 hours")
    expect(page.locator("#preview-times li")).to_have_count(1)
    assert posts == []
    api(server, "DELETE", "/api/jobs/e2e-viewed-interval")


def test_a_cron_trigger_given_field_by_field_is_kept_until_an_expression_replaces_it(
        open_page, server: Server):
    api(server, "POST", "/api/jobs", json={
        "id": "e2e-fields", "task": "demo.echo", "kwargs": {"value": 1},
        "trigger": {"type": "cron", "hour": "3", "minute": "15"}})
    page = open_page(ADMIN_TOKEN)
    patches: list[object] = []
    page.on("request", lambda r: patches.append(r.post_data_json)
            if r.method == "PATCH" else None)
    open_job(page, "e2e-fields")
    expect(page.locator("#cron-fields-note")).to_contain_text("hour=3 minute=15")
    expect(page.get_by_label("Cron expression")).to_have_value("")
    expect(page.locator("#preview-times li")).to_have_count(5)
    assert all((t.hour, t.minute) == (3, 15) for t in shown_times(page))  # the server's UTC

    page.get_by_label(re.compile(r"^Name")).fill("E2E fields")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#flash")).to_contain_text("Saved E2E fields")
    assert patches == [{"name": "E2E fields"}]
    trigger = api(server, "GET", "/api/jobs/e2e-fields")["trigger"]
    assert (trigger["hour"], trigger["minute"], "expr" in trigger) == ("3", "15", False)

    expect(page.locator("#job-form[data-ready]")).to_have_count(1)
    page.get_by_label("Cron expression").fill("30 4 * * *")
    page.get_by_role("button", name="Save changes").click()
    expect(page.locator("#flash")).to_contain_text("Saved E2E fields: At 04:30")
    assert api(server, "GET", "/api/jobs/e2e-fields")["trigger"]["expr"] == "30 4 * * *"
    api(server, "DELETE", "/api/jobs/e2e-fields")


def test_a_job_of_a_task_this_deployment_lacks_shows_its_arguments_as_stored(
        open_page, server: Server):
    store = Store(Database(f"sqlite:///{server.db_path}"))
    store.jobs.insert("e2e-orphan", "reports.old_name", {
        "name": "E2E orphan", "task": "reports.old_name", "kwargs": {"quarter": "q3"},
        "trigger": {"type": "cron", "expr": "0 6 * * *"}}, None)
    page = open_page(VIEWER_TOKEN)
    open_job(page, "e2e-orphan")
    expect(page.get_by_label("Task")).to_have_value("reports.old_name")
    expect(page.locator(".kwargs-placeholder")).to_contain_text(
        "reports.old_name is not registered in this deployment")
    expect(page.locator(".kwargs-body pre")).to_contain_text('"quarter": "q3"')
    expect(page.get_by_label("Cron expression")).to_have_value("0 6 * * *")
    store.jobs.delete("e2e-orphan")
    store.db.dispose()
