"""The /api/jobs contract: creating cron, interval and date jobs, listing, changing, pausing,
deleting and running them, and jobs firing by themselves."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask

from tests.api_helpers import all_pages, parse_time
from tests.conftest import wait_for

JOB_FIELDS = {"id", "name", "task", "kwargs", "trigger", "next_run_time", "paused",
              "max_instances", "coalesce", "misfire_grace_time", "last_run"}
LAST_RUN_FIELDS = {"id", "state", "started_at", "finished_at"}


@pytest.fixture
def api(make_app: Callable[..., Flask]) -> Any:
    """A started app without the built-in prune job, so lists hold only this test's jobs."""
    return make_app(PRUNE_RUNS_CRON="").test_client()


def iso_in(delta: timedelta) -> str:
    return (datetime.now(UTC) + delta).isoformat()


def create(api: Any, **body: Any) -> dict[str, Any]:
    body.setdefault("task", "demo.echo")
    body.setdefault("kwargs", {"value": 1})
    response = api.post("/api/jobs", json=body)
    assert response.status_code == 201, response.json
    return response.json  # type: ignore[no-any-return]


def get_job(api: Any, job_id: str) -> dict[str, Any]:
    response = api.get(f"/api/jobs/{job_id}")
    assert response.status_code == 200, response.json
    return response.json  # type: ignore[no-any-return]


# -- creating -------------------------------------------------------------------------------------

def test_create_cron_job(api: Any) -> None:
    before = datetime.now(UTC)
    response = api.post("/api/jobs", json={
        "id": "every-five", "task": "demo.echo", "kwargs": {"value": "hi"},
        "trigger": {"type": "cron", "expr": "*/5 * * * *"}})
    assert response.status_code == 201, response.json
    assert response.headers["Location"] == "/api/jobs/every-five"
    job = response.json
    assert JOB_FIELDS <= set(job)
    assert job["id"] == "every-five"
    assert job["name"] == "every-five"
    assert job["task"] == "demo.echo"
    assert job["kwargs"] == {"value": "hi"}
    assert job["trigger"] == {"type": "cron", "expr": "*/5 * * * *",
                              "description": "Every 5 minutes"}
    next_run = parse_time(job["next_run_time"])
    assert before < next_run <= before + timedelta(minutes=5)
    assert next_run.minute % 5 == 0 and next_run.second == 0 and next_run.microsecond == 0
    assert job["paused"] is False
    assert job["max_instances"] == 1
    assert job["coalesce"] is True
    assert job["misfire_grace_time"] == 60
    assert job["last_run"] is None
    assert get_job(api, "every-five") == job


def test_create_job_without_id_generates_one(api: Any) -> None:
    response = api.post("/api/jobs", json={"task": "demo.echo", "kwargs": {"value": 1},
                                           "trigger": {"type": "cron", "expr": "0 * * * *"}})
    assert response.status_code == 201, response.json
    job_id = response.json["id"]
    assert isinstance(job_id, str) and job_id
    assert response.headers["Location"] == f"/api/jobs/{job_id}"
    assert get_job(api, job_id)["id"] == job_id
    other = create(api, trigger={"type": "cron", "expr": "0 * * * *"})
    assert other["id"] != job_id


def test_create_job_with_options(api: Any) -> None:
    job = create(api, id="opts", name="Nightly report", max_instances=3, coalesce=False,
                 misfire_grace_time=5, trigger={"type": "cron", "expr": "30 2 * * *"})
    assert job["name"] == "Nightly report"
    assert (job["max_instances"], job["coalesce"], job["misfire_grace_time"]) == (3, False, 5)
    assert get_job(api, "opts") == job


def test_create_paused_job(api: Any) -> None:
    job = create(api, id="sleeper", paused=True, trigger={"type": "cron", "expr": "* * * * *"})
    assert job["paused"] is True
    assert job["next_run_time"] is None


def test_create_cron_job_with_fields_and_timezone(api: Any) -> None:
    job = create(api, trigger={"type": "cron", "hour": "3", "minute": "30",
                               "timezone": "Europe/Paris"})
    assert job["trigger"]["hour"] == "3" and job["trigger"]["minute"] == "30"
    assert job["trigger"]["timezone"] == "Europe/Paris"
    assert isinstance(job["trigger"]["description"], str) and job["trigger"]["description"]
    local = parse_time(job["next_run_time"]).astimezone(ZoneInfo("Europe/Paris"))
    assert (local.hour, local.minute, local.second) == (3, 30, 0)


def test_create_interval_job(api: Any) -> None:
    before = datetime.now(UTC)
    job = create(api, trigger={"type": "interval", "minutes": 10})
    assert job["trigger"]["type"] == "interval"
    assert job["trigger"]["minutes"] == 10
    assert job["trigger"]["description"] == "Every 10 minutes"
    next_run = parse_time(job["next_run_time"])
    assert before + timedelta(minutes=10) <= next_run <= datetime.now(UTC) + timedelta(minutes=10)
    assert job["paused"] is False


def test_create_date_job(api: Any) -> None:
    when = (datetime.now(UTC) + timedelta(hours=5)).replace(microsecond=0)
    given = when.astimezone(ZoneInfo("Asia/Tokyo")).isoformat()  # any offset is fine
    job = create(api, trigger={"type": "date", "run_date": given})
    assert job["trigger"]["type"] == "date"
    assert parse_time(job["trigger"]["run_date"]) == when
    assert parse_time(job["next_run_time"]) == when
    assert job["trigger"]["description"]


def test_date_job_with_huge_misfire_grace_is_accepted(api: Any) -> None:
    """The grace is compared in seconds; as a timedelta from now it used to overflow (500)."""
    job = create(api, misfire_grace_time=1e300,
                 trigger={"type": "date", "run_date": iso_in(timedelta(hours=1))})
    assert job["misfire_grace_time"] == 1e300


def test_date_job_just_past_within_grace_is_accepted(api: Any) -> None:
    """A run date a few seconds ago is within the default 60 s grace: it fires at once."""
    job = create(api, trigger={"type": "date", "run_date": iso_in(timedelta(seconds=-5))})
    run = wait_for(lambda: (api.get("/api/runs", query_string={"job_id": job["id"]})
                            .json["items"] or [None])[0], message="the date job's run")
    assert run["job_id"] == job["id"]


def test_date_job_fires_once_then_is_gone(api: Any) -> None:
    job = create(api, kwargs={"value": "once"},
                 trigger={"type": "date", "run_date": iso_in(timedelta(seconds=0.3))})

    def finished_run() -> Any:
        items = api.get("/api/runs", query_string={"job_id": job["id"]}).json["items"]
        return items[0] if items and items[0]["state"] == "succeeded" else None

    run = wait_for(finished_run, message="the date job's run to succeed")
    assert run["result"] == "once"
    wait_for(lambda: api.get(f"/api/jobs/{job['id']}").status_code == 404,
             message="the fired date job to be removed")
    assert len(api.get("/api/runs", query_string={"job_id": job["id"]}).json["items"]) == 1


# -- crontab weekdays -----------------------------------------------------------------------------

@pytest.mark.parametrize(("weekdays", "expected"), [
    ("1", {0}),             # standard crontab: 1 = Monday (APScheduler's from_crontab: Tuesday)
    ("0", {6}),             # 0 = Sunday
    ("7", {6}),             # 7 = Sunday too
    ("mon", {0}),
    ("1-5", {0, 1, 2, 3, 4}),
    ("5-7", {4, 5, 6}),
    ("0,6", {5, 6}),
], ids=["1-is-monday", "0-is-sunday", "7-is-sunday", "mon", "weekdays", "fri-to-sun",
        "weekend"])
def test_crontab_weekday_numbers(api: Any, weekdays: str, expected: set[int]) -> None:
    job = create(api, trigger={"type": "cron", "expr": f"0 9 * * {weekdays}"})
    next_run = parse_time(job["next_run_time"]).astimezone(UTC)
    assert next_run.weekday() in expected, next_run
    assert (next_run.hour, next_run.minute) == (9, 0)
    # It is the first such day from now: no matching day is skipped.
    now = datetime.now(UTC)
    days = [(now + timedelta(days=d)).replace(hour=9, minute=0, second=0, microsecond=0)
            for d in range(8)]
    assert next_run == min(d for d in days if d > now and d.weekday() in expected)


def test_crontab_weekday_in_a_timezone(api: Any) -> None:
    job = create(api, trigger={"type": "cron", "expr": "0 9 * * 1", "timezone": "Europe/Paris"})
    local = parse_time(job["next_run_time"]).astimezone(ZoneInfo("Europe/Paris"))
    assert (local.weekday(), local.hour, local.minute) == (0, 9, 0)


# -- listing --------------------------------------------------------------------------------------

def test_list_by_next_run_time_with_pagination(api: Any) -> None:
    hours = [5, 1, 4, 2, 3]
    for h in hours:
        create(api, id=f"in-{h}h", trigger={"type": "date",
                                             "run_date": iso_in(timedelta(hours=h))})
    create(api, id="paused", paused=True, trigger={"type": "cron", "expr": "0 0 * * *"})
    pages = all_pages(api, "/api/jobs", limit=2)
    ids = [job["id"] for page in pages for job in page]
    assert ids == ["in-1h", "in-2h", "in-3h", "in-4h", "in-5h", "paused"]
    assert len(set(ids)) == len(ids)
    assert [len(page) for page in pages][:3] == [2, 2, 2]
    times = [parse_time(job["next_run_time"]) for page in pages for job in page[:5]
             if job["next_run_time"]]
    assert times == sorted(times)


def test_list_default_page_holds_everything_when_small(api: Any) -> None:
    for i in range(3):
        create(api, id=f"job-{i}", trigger={"type": "cron", "expr": f"{i} * * * *"})
    response = api.get("/api/jobs")
    assert response.status_code == 200
    assert sorted(j["id"] for j in response.json["items"]) == ["job-0", "job-1", "job-2"]
    assert response.json["next_cursor"] is None
    for item in response.json["items"]:
        assert JOB_FIELDS <= set(item)


def test_list_filters_task_and_paused(api: Any) -> None:
    create(api, id="echo-active", trigger={"type": "cron", "expr": "0 1 * * *"})
    create(api, id="echo-paused", paused=True, trigger={"type": "cron", "expr": "0 2 * * *"})
    create(api, id="sleep-active", task="demo.sleep", kwargs={"seconds": 0},
           trigger={"type": "cron", "expr": "0 3 * * *"})

    def ids(**params: Any) -> set[str]:
        response = api.get("/api/jobs", query_string=params)
        assert response.status_code == 200, response.json
        return {j["id"] for j in response.json["items"]}

    assert ids() == {"echo-active", "echo-paused", "sleep-active"}
    assert ids(task="demo.echo") == {"echo-active", "echo-paused"}
    assert ids(task="demo.sleep") == {"sleep-active"}
    assert ids(task="no.such.task") == set()
    assert ids(paused="true") == {"echo-paused"}
    assert ids(paused="false") == {"echo-active", "sleep-active"}
    assert ids(task="demo.echo", paused="false") == {"echo-active"}


# -- changing -------------------------------------------------------------------------------------

def test_patch_name(api: Any) -> None:
    job = create(api, id="p", trigger={"type": "cron", "expr": "0 9 * * *"})
    response = api.patch("/api/jobs/p", json={"name": "Morning"})
    assert response.status_code == 200, response.json
    assert response.json == {**job, "name": "Morning"}
    assert get_job(api, "p") == response.json


def test_patch_kwargs(api: Any) -> None:
    job = create(api, id="p", trigger={"type": "cron", "expr": "0 9 * * *"})
    response = api.patch("/api/jobs/p", json={"kwargs": {"value": [1, 2]}})
    assert response.status_code == 200, response.json
    assert response.json == {**job, "kwargs": {"value": [1, 2]}}


def test_patch_options(api: Any) -> None:
    job = create(api, id="p", trigger={"type": "cron", "expr": "0 9 * * *"})
    response = api.patch("/api/jobs/p", json={"max_instances": 4, "coalesce": False,
                                              "misfire_grace_time": 2.5})
    assert response.status_code == 200, response.json
    assert response.json == {**job, "max_instances": 4, "coalesce": False,
                             "misfire_grace_time": 2.5}


def test_patch_trigger_reschedules(api: Any) -> None:
    job = create(api, id="p", trigger={"type": "cron", "expr": "0 0 1 1 *"})  # next new year
    response = api.patch("/api/jobs/p", json={"trigger": {"type": "cron", "expr": "*/5 * * * *"}})
    assert response.status_code == 200, response.json
    changed = response.json
    assert changed["trigger"] == {"type": "cron", "expr": "*/5 * * * *",
                                  "description": "Every 5 minutes"}
    assert changed["next_run_time"] != job["next_run_time"]
    next_run = parse_time(changed["next_run_time"])
    assert next_run <= datetime.now(UTC) + timedelta(minutes=5)
    assert next_run.minute % 5 == 0
    assert get_job(api, "p") == changed


def test_patch_trigger_to_another_type(api: Any) -> None:
    create(api, id="p", trigger={"type": "cron", "expr": "0 0 1 1 *"})
    when = (datetime.now(UTC) + timedelta(hours=2)).replace(microsecond=0)
    response = api.patch("/api/jobs/p", json={"trigger": {"type": "date",
                                                          "run_date": when.isoformat()}})
    assert response.status_code == 200, response.json
    assert parse_time(response.json["next_run_time"]) == when


def test_patch_trigger_of_paused_job_keeps_it_paused(api: Any) -> None:
    create(api, id="p", paused=True, trigger={"type": "cron", "expr": "0 0 1 1 *"})
    response = api.patch("/api/jobs/p", json={"trigger": {"type": "interval", "minutes": 1}})
    assert response.status_code == 200, response.json
    assert response.json["paused"] is True and response.json["next_run_time"] is None
    assert response.json["trigger"]["minutes"] == 1


@pytest.mark.parametrize(("patch", "field"), [
    ({"kwargs": {}}, "kwargs.value"),
    ({"kwargs": {"value": 1, "extra": True}}, "kwargs.extra"),
    ({"kwargs": [1]}, "kwargs"),
    ({"trigger": {"type": "cron", "expr": "99 * * * *"}}, "trigger.minute"),
    ({"trigger": {"type": "interval", "seconds": 0}}, "trigger.seconds"),
    ({"trigger": {"type": "interval", "days": 900_000_000}}, "trigger"),
    ({"trigger": {"type": "date", "run_date": "2030-01-01T00:00:00"}}, "trigger.run_date"),
    ({"trigger": "*/5 * * * *"}, "trigger"),
    ({"max_instances": "2"}, "max_instances"),
    ({"max_instances": 0}, "max_instances"),
    ({"misfire_grace_time": 0}, "misfire_grace_time"),
    ({"name": None}, "name"),
    ({"task": "demo.sleep"}, "task"),
    ({"paused": True}, "paused"),
    ({}, "body"),
], ids=["missing-kwarg", "extra-kwarg", "kwargs-array", "bad-cron", "zero-interval",
        "interval-too-long", "naive-date", "trigger-string", "max-instances-string",
        "max-instances-zero", "grace-zero", "null-name", "task-not-patchable",
        "paused-not-patchable", "empty"])
def test_invalid_patch_leaves_job_unchanged(api: Any, patch: dict[str, Any], field: str) -> None:
    job = create(api, id="p", name="keep", trigger={"type": "cron", "expr": "0 9 * * *"})
    response = api.patch("/api/jobs/p", json=patch)
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert error["code"] == "invalid_request"
    assert field in [d["field"] for d in error["details"]], error
    assert get_job(api, "p") == job


def test_patch_wrong_kwarg_type_leaves_job_unchanged(api: Any) -> None:
    job = create(api, id="s", task="demo.sleep", kwargs={"seconds": 1},
                 trigger={"type": "cron", "expr": "0 9 * * *"})
    response = api.patch("/api/jobs/s", json={"kwargs": {"seconds": "abc"}})
    assert response.status_code == 400, response.json
    assert [d["field"] for d in response.json["error"]["details"]] == ["kwargs.seconds"]
    assert get_job(api, "s") == job


# -- pause, resume, delete -----------------------------------------------------------------------

def test_pause_and_resume(api: Any) -> None:
    job = create(api, id="pr", trigger={"type": "cron", "expr": "*/5 * * * *"})
    response = api.post("/api/jobs/pr/pause")
    assert response.status_code == 200, response.json
    assert response.json == {**job, "paused": True, "next_run_time": None}
    assert get_job(api, "pr") == response.json
    assert api.post("/api/jobs/pr/pause").json["paused"] is True  # pausing twice is fine

    response = api.post("/api/jobs/pr/resume")
    assert response.status_code == 200, response.json
    resumed = response.json
    assert resumed["paused"] is False
    next_run = parse_time(resumed["next_run_time"])
    assert datetime.now(UTC) < next_run <= datetime.now(UTC) + timedelta(minutes=5)
    assert next_run.minute % 5 == 0
    assert {k: v for k, v in resumed.items() if k != "next_run_time"} == \
        {k: v for k, v in job.items() if k != "next_run_time"}
    assert get_job(api, "pr") == resumed


def test_resume_of_a_running_job_keeps_its_next_run_time(api: Any) -> None:
    job = create(api, id="r", trigger={"type": "cron", "expr": "0 0 1 1 *"})
    response = api.post("/api/jobs/r/resume")
    assert response.status_code == 200, response.json
    assert response.json["next_run_time"] == job["next_run_time"]


def test_resume_interval_job_stays_on_its_grid(api: Any) -> None:
    job = create(api, id="i", trigger={"type": "interval", "hours": 1})
    api.post("/api/jobs/i/pause")
    resumed = api.post("/api/jobs/i/resume").json
    assert resumed["next_run_time"] == job["next_run_time"]


def test_delete(api: Any) -> None:
    create(api, id="gone", trigger={"type": "cron", "expr": "0 9 * * *"})
    create(api, id="kept", trigger={"type": "cron", "expr": "0 9 * * *"})
    response = api.delete("/api/jobs/gone")
    assert response.status_code == 204
    assert response.get_data() == b""
    assert api.get("/api/jobs/gone").status_code == 404
    assert api.delete("/api/jobs/gone").status_code == 404
    assert [j["id"] for j in api.get("/api/jobs").json["items"]] == ["kept"]


def test_deleted_interval_job_stops_firing(api: Any) -> None:
    job = create(api, trigger={"type": "interval", "seconds": 0.2})

    def runs_of(job_id: str) -> list[dict[str, Any]]:
        return api.get("/api/runs", query_string={"job_id": job_id}).json["items"]

    wait_for(lambda: runs_of(job["id"]), message="the first fire")
    assert api.delete(f"/api/jobs/{job['id']}").status_code == 204
    seen = {r["id"] for r in runs_of(job["id"])}
    # A canary on the same 0.2 s grid: once it has fired three times, the deleted job had
    # every chance to fire too.
    canary = create(api, trigger={"type": "interval", "seconds": 0.2})
    wait_for(lambda: len(runs_of(canary["id"])) >= 3, message="three fires of the canary")
    assert {r["id"] for r in runs_of(job["id"])} == seen
    assert api.get(f"/api/jobs/{job['id']}").status_code == 404


# -- running --------------------------------------------------------------------------------------

def test_run_job_now(api: Any) -> None:
    job = create(api, id="now", kwargs={"value": {"answer": 42}},
                 trigger={"type": "cron", "expr": "0 0 1 1 *"})
    response = api.post("/api/jobs/now/run")
    assert response.status_code == 202, response.json
    run = response.json
    assert response.headers["Location"] == f"/api/runs/{run['id']}"
    assert run["job_id"] == "now"
    assert run["task"] == "demo.echo"
    assert run["kwargs"] == {"value": {"answer": 42}}
    assert run["state"] in ("queued", "running", "succeeded")

    def settled() -> Any:
        current = api.get(f"/api/runs/{run['id']}").json
        return current if current["state"] == "succeeded" else None

    done = wait_for(settled, message="the job's run to succeed")
    assert done["result"] == {"answer": 42}

    after = get_job(api, "now")
    assert after["next_run_time"] == job["next_run_time"]
    assert after["paused"] is False
    assert set(after["last_run"]) >= LAST_RUN_FIELDS
    assert after["last_run"]["id"] == run["id"]
    assert after["last_run"]["state"] == "succeeded"
    assert parse_time(after["last_run"]["started_at"]) <= \
        parse_time(after["last_run"]["finished_at"])
    listed = api.get("/api/jobs").json["items"]
    assert [j["last_run"]["id"] for j in listed if j["id"] == "now"] == [run["id"]]


def test_run_paused_job_now_keeps_it_paused(api: Any) -> None:
    create(api, id="pz", paused=True, trigger={"type": "cron", "expr": "0 9 * * *"})
    run = api.post("/api/jobs/pz/run").json
    wait_for(lambda: api.get(f"/api/runs/{run['id']}").json["state"] == "succeeded",
             message="the run to succeed")
    job = get_job(api, "pz")
    assert job["paused"] is True and job["next_run_time"] is None
    assert job["last_run"]["id"] == run["id"]


def test_interval_job_fires_by_itself(api: Any) -> None:
    job = create(api, id="tick", kwargs={"value": "tick"},
                 trigger={"type": "interval", "seconds": 1})
    create(api, id="other", trigger={"type": "cron", "expr": "0 0 1 1 *"})
    api.post("/api/jobs/other/run")

    def two_succeeded() -> Any:
        items = api.get("/api/runs", query_string={"job_id": "tick"}).json["items"]
        done = [r for r in items if r["state"] == "succeeded"]
        return items if len(done) >= 2 else None

    items = wait_for(two_succeeded, timeout=8, message="two fires of the interval job")
    assert {r["job_id"] for r in items} == {"tick"}
    assert {r["task"] for r in items} == {"demo.echo"}
    assert all(r["result"] == "tick" for r in items if r["state"] == "succeeded")
    fires = sorted(parse_time(r["scheduled_for"]) for r in items)
    assert len(set(fires)) == len(fires)
    assert fires[0] >= parse_time(job["next_run_time"]) - timedelta(milliseconds=1)
    later = get_job(api, "tick")
    assert parse_time(later["next_run_time"]) > parse_time(job["next_run_time"])
    assert later["last_run"]["id"] in {r["id"] for r in items}


# -- the built-in job ----------------------------------------------------------------------------

def test_builtin_prune_job_exists_after_start(client: Any) -> None:
    response = client.get("/api/jobs/maintenance.prune_runs")
    assert response.status_code == 200, response.json
    job = response.json
    assert job["task"] == "maintenance.prune_runs"
    assert job["kwargs"] == {"older_than_days": 30}
    assert job["trigger"]["type"] == "cron"
    assert job["trigger"]["expr"] == "17 3 * * *"
    assert job["paused"] is False
    next_run = parse_time(job["next_run_time"]).astimezone(UTC)
    assert (next_run.hour, next_run.minute) == (3, 17)
    assert "maintenance.prune_runs" in [j["id"] for j in client.get("/api/jobs").json["items"]]


def test_every_bad_field_is_reported_at_once(make_app: Any) -> None:
    api = make_app(PRUNE_RUNS_CRON="").test_client()
    response = api.post("/api/jobs", json={
        "task": "demo.sleep", "kwargs": {"seconds": "soon"},
        "trigger": {"type": "cron", "expr": "99 * * * *"}})
    assert response.status_code == 400
    fields = [d["field"] for d in response.json["error"]["details"]]
    assert fields == ["kwargs.seconds", "trigger.minute"]
    assert api.get("/api/jobs").json["items"] == []
