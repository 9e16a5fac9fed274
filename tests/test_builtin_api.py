"""Flask-APScheduler's API at /scheduler: its routes and shapes, behind auth and the registry."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING

from scheduler_app.services import services
from tests import tasks_for_tests
from tests.conftest import wait_for

SLEEP_REF = "scheduler_app.tasks.demo:sleep"
JOB_KEYS = {"id", "name", "func", "args", "kwargs", "trigger", "misfire_grace_time",
            "max_instances", "coalesce", "next_run_time"}
HOURLY = {"trigger": "interval", "hours": 1}


def add(client: Any, **body: Any) -> Any:
    return client.post("/scheduler/jobs", json=body)


def stored_ids(client: Any) -> set[str]:
    """Job ids as both APIs see them (they must agree)."""
    builtin = {job["id"] for job in client.get("/scheduler/jobs").json}
    api = {job["id"] for job in client.get("/api/jobs?limit=500").json["items"]}
    assert builtin == api
    return builtin


def run_state(client: Any, run_id: int, *states: str) -> dict[str, Any]:
    return wait_for(lambda: (r := client.get(f"/api/runs/{run_id}").json)["state"] in states
                    and r, message=f"run {run_id} to reach {states}")


def assert_error(response: Any, status: int, field: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.json
    assert set(body["error"]) == {"code", "message", "details"}
    assert body["error_message"] == body["error"]["message"]
    if field is not None:
        fields = [d["field"] for d in body["error"]["details"]]
        assert field in fields, body
    return body


# -- shapes and the round trip -----------------------------------------------------------------

def test_scheduler_info(client):
    response = client.get("/scheduler")
    assert response.status_code == 200
    assert response.json == {"current_host": services(client.application).scheduler.host_name,
                             "allowed_hosts": ["*"], "running": True}


def test_job_round_trip(client):
    before = stored_ids(client)
    response = add(client, id="nightly", func="demo.sleep", kwargs={"seconds": 0.05},
                   trigger="interval", minutes=30, max_instances=2, misfire_grace_time=30)
    assert response.status_code == 200, response.json
    job = response.json
    assert set(job) == JOB_KEYS | {"minutes", "start_date"}
    assert job["id"] == "nightly" and job["name"] == "nightly"
    assert job["func"] == SLEEP_REF
    assert job["args"] == [] and job["kwargs"] == {"seconds": 0.05}
    assert job["trigger"] == "interval" and job["minutes"] == 30
    assert job["start_date"].endswith("+00:00")
    assert job["next_run_time"] == job["start_date"]
    assert (job["max_instances"], job["misfire_grace_time"], job["coalesce"]) == (2, 30, True)

    assert client.get("/scheduler/jobs/nightly").json == job
    assert job in client.get("/scheduler/jobs").json
    assert stored_ids(client) == before | {"nightly"}
    assert client.get("/api/jobs/nightly").json["task"] == "demo.sleep"

    response = client.patch("/scheduler/jobs/nightly", json={
        "trigger": "cron", "hour": "4", "minute": "30", "kwargs": {"seconds": 0.1, "steps": 2},
        "name": "Nightly", "max_instances": 1, "coalesce": False, "misfire_grace_time": 10})
    assert response.status_code == 200, response.json
    patched = response.json
    assert set(patched) == JOB_KEYS | {"hour", "minute"}
    assert (patched["trigger"], patched["hour"], patched["minute"]) == ("cron", "4", "30")
    assert patched["next_run_time"].endswith("T04:30:00+00:00")
    assert patched["kwargs"] == {"seconds": 0.1, "steps": 2} and patched["name"] == "Nightly"
    assert (patched["max_instances"], patched["coalesce"], patched["misfire_grace_time"]) == \
        (1, False, 10)

    paused = client.post("/scheduler/jobs/nightly/pause")
    assert paused.status_code == 200 and paused.json["next_run_time"] is None
    assert client.get("/api/jobs/nightly").json["paused"] is True
    resumed = client.post("/scheduler/jobs/nightly/resume")
    assert resumed.status_code == 200
    assert resumed.json["next_run_time"] == patched["next_run_time"]

    response = client.post("/scheduler/jobs/nightly/run")
    assert response.status_code == 202, response.json
    assert {k: v for k, v in response.json.items() if k != "run"} == resumed.json
    run = response.json["run"]
    assert run["job_id"] == "nightly" and run["task"] == "demo.sleep"
    assert response.headers["Location"] == f"/api/runs/{run['id']}"
    done = run_state(client, run["id"], "succeeded", "failed")
    assert done["state"] == "succeeded" and done["result"] == {"slept": 0.1}
    # the schedule is unchanged by a run now
    assert client.get("/scheduler/jobs/nightly").json == resumed.json

    assert client.delete("/scheduler/jobs/nightly").status_code == 204
    assert_error(client.get("/scheduler/jobs/nightly"), 404)
    assert stored_ids(client) == before


@pytest.mark.parametrize("func", ["demo.sleep", SLEEP_REF])
def test_func_by_task_name_or_reference(client, func):
    response = add(client, id="by-func", func=func, args=[0.05], **HOURLY)
    assert response.status_code == 200, response.json
    assert response.json["func"] == SLEEP_REF
    assert client.get("/api/jobs/by-func").json["task"] == "demo.sleep"
    run = client.post("/scheduler/jobs/by-func/run").json["run"]
    assert run_state(client, run["id"], "succeeded", "failed")["state"] == "succeeded"


def test_positional_args_map_onto_parameters_in_order(client):
    job = add(client, id="positional", func="demo.sleep", args=[0.5, 5], **HOURLY).json
    assert job["args"] == [] and job["kwargs"] == {"seconds": 0.5, "steps": 5}
    job = add(client, id="mixed", func="demo.sleep", args=[0.5], kwargs={"steps": 2},
              **HOURLY).json
    assert job["kwargs"] == {"seconds": 0.5, "steps": 2}
    before = stored_ids(client)

    assert_error(add(client, id="x", func="demo.sleep", args=[1, 2, 3], **HOURLY), 400, "args")
    assert_error(add(client, id="x", func="demo.sleep", args=[1], kwargs={"seconds": 2},
                     **HOURLY), 400, "args.0")
    assert_error(add(client, id="x", func="demo.sleep", args=["soon"], **HOURLY), 400, "args.0")
    assert_error(add(client, id="x", func="demo.sleep", args=[1], kwargs={"nope": 1},
                     **HOURLY), 400, "kwargs.nope")
    assert stored_ids(client) == before


def test_job_without_trigger_runs_once_now_and_leaves_the_list(client):
    """APScheduler's default trigger is a date trigger at now."""
    before = stored_ids(client)
    response = add(client, id="once", func="demo.echo", kwargs={"value": "hi"})
    assert response.status_code == 200, response.json
    assert response.json["trigger"] == "date"
    runs = wait_for(lambda: client.get("/api/runs?job_id=once").json["items"],
                    message="the job to fire")
    assert run_state(client, runs[0]["id"], "succeeded")["result"] == "hi"
    wait_for(lambda: stored_ids(client) == before, message="the fired date job to leave")


def test_id_is_generated_when_absent(client):
    response = add(client, func="demo.sleep", kwargs={"seconds": 1}, **HOURLY)
    assert response.status_code == 200, response.json
    job = response.json
    assert job["id"] and job["name"] == "demo.sleep"
    assert client.get(f"/scheduler/jobs/{job['id']}").json == job


def test_legacy_trigger_object(client):
    response = add(client, id="legacy", func="demo.sleep", kwargs={"seconds": 1},
                   trigger={"type": "interval", "minutes": 5})
    assert response.status_code == 200, response.json
    assert (response.json["trigger"], response.json["minutes"]) == ("interval", 5)
    body = assert_error(add(client, id="legacy2", func="demo.sleep", kwargs={"seconds": 1},
                            trigger={"type": "cron", "minute": "99"}), 400, "trigger.minute")
    assert "99" in body["error"]["message"]
    assert_error(add(client, id="legacy2", func="demo.sleep", kwargs={"seconds": 1},
                     trigger={"type": "interval", "minutes": 5}, minutes=6), 400, "minutes")


def test_crontab_expression_shows_as_apscheduler_fields(client):
    created = client.post("/api/jobs", json={
        "id": "weekdays", "task": "demo.sleep", "kwargs": {"seconds": 1},
        "trigger": {"type": "cron", "expr": "30 2 * * 1-5"}})
    assert created.status_code == 201, created.json
    job = client.get("/scheduler/jobs/weekdays").json
    fields = {k: job[k] for k in ("minute", "hour", "day", "month", "day_of_week")}
    assert fields == {"minute": "30", "hour": "2", "day": "*", "month": "*",
                      "day_of_week": "mon,tue,wed,thu,fri"}
    assert "expr" not in job
    # Sent back, the fields mean the same schedule.
    copy = add(client, id="copy", func=job["func"], kwargs=job["kwargs"], trigger="cron",
               **fields).json
    assert copy["next_run_time"] == job["next_run_time"]


def test_run_answers_before_the_task_finishes(client):
    """The run is queued, not executed inside the request: the task waits on a gate that only
    opens after the answer came back."""
    add(client, id="gated", func="testing.wait_gate", kwargs={"gate": "builtin-run"}, **HOURLY)
    tasks_for_tests.gates.pop("builtin-run", None)
    response = client.post("/scheduler/jobs/gated/run")
    assert response.status_code == 202
    run = response.json["run"]
    assert run["state"] in ("queued", "running")
    run_state(client, run["id"], "running")
    tasks_for_tests.gates.setdefault("builtin-run", threading.Event()).set()
    assert run_state(client, run["id"], "succeeded", "failed")["result"] == "builtin-run"


def test_replace_existing(client):
    add(client, id="rep", func="demo.sleep", kwargs={"seconds": 1}, max_instances=3, **HOURLY)
    client.post("/scheduler/jobs/rep/pause")
    assert_error(add(client, id="rep", func="demo.sleep", kwargs={"seconds": 2}, **HOURLY), 409)

    response = add(client, id="rep", func=SLEEP_REF, args=[2], trigger="cron", hour="5",
                   replace_existing=True)
    assert response.status_code == 200, response.json
    job = response.json
    assert job["kwargs"] == {"seconds": 2} and job["hour"] == "5"
    assert job["max_instances"] == 1  # omitted options go back to their defaults
    assert job["next_run_time"] is not None  # a replaced job is scheduled afresh

    # replace_existing cannot swap the task, and a bad definition leaves the job as it was
    assert_error(add(client, id="rep", func="demo.echo", kwargs={"value": 1},
                     replace_existing=True, **HOURLY), 400, "func")
    assert_error(add(client, id="rep", func="demo.sleep", kwargs={"seconds": 1},
                     replace_existing=True, trigger="cron", hour="25"), 400, "hour")
    assert client.get("/scheduler/jobs/rep").json == job

    response = add(client, id="fresh", func="demo.sleep", kwargs={"seconds": 1},
                   replace_existing=True, **HOURLY)
    assert response.status_code == 200


# -- nothing outside the registry is ever imported or run --------------------------------------

def _evil_calls(sentinel: Any) -> list[tuple[str, list[Any], dict[str, Any]]]:
    command = f"touch {sentinel}"
    opener = f"open({str(sentinel)!r}, 'w').close()"
    return [
        ("os:system", [command], {}),
        ("os:system", [], {"command": command}),
        ("subprocess:run", [["touch", str(sentinel)]], {}),
        ("subprocess:run", [command], {"shell": True}),
        ("builtins:eval", [opener], {}),
        ("builtins:exec", [opener], {}),
        ("__import__", ["os"], {}),
        ("/tmp/x.py", [command], {}),
        ("scheduler_app.tasks.demo:_private", [command], {}),
        ("tests.tasks_for_tests:gates", [command], {}),
        ("pickle:loads", [command], {}),
        ("os.system", [], {"command": command}),
        ("scheduler_app.tasks.demo.sleep", [1], {}),
        ("scheduler_app.tasks.demo:sleep ", [1], {}),
        ("DEMO.SLEEP", [1], {}),
    ]


def test_unregistered_func_is_refused_and_never_run(client, tmp_path):
    sentinel = tmp_path / "pwned"
    before = stored_ids(client)
    for func, args, kwargs in _evil_calls(sentinel):
        for trigger in ({}, {"trigger": "date"}, HOURLY):
            response = add(client, id="evil", func=func, args=args, kwargs=kwargs, **trigger)
            body = assert_error(response, 400, "func")
            assert body["error"]["code"] == "invalid_request"
            assert stored_ids(client) == before, func
    for func in (42, None, True, ["os", "system"], {"module": "os"}, ""):
        assert_error(add(client, id="evil", func=func, **HOURLY), 400, "func")
    assert_error(add(client, id="evil", kwargs={"command": "id"}, **HOURLY), 400, "func")

    # Nor through PATCH or replace_existing of an existing job.
    add(client, id="good", func="demo.sleep", kwargs={"seconds": 1}, **HOURLY)
    good = client.get("/scheduler/jobs/good").json
    for func, args, kwargs in _evil_calls(sentinel):
        assert_error(client.patch("/scheduler/jobs/good",
                                  json={"func": func, "args": args, "kwargs": kwargs}), 400,
                     "func")
        assert_error(add(client, id="good", func=func, args=args, kwargs=kwargs,
                         replace_existing=True, **HOURLY), 400, "func")
    assert client.get("/scheduler/jobs/good").json == good
    client.delete("/scheduler/jobs/good")

    # A run queued now is done only after anything queued before it had its turn.
    probe = client.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": 1}}).json
    run_state(client, probe["id"], "succeeded")
    assert [r["id"] for r in client.get("/api/runs").json["items"]] == [probe["id"]]
    assert stored_ids(client) == before
    assert not sentinel.exists()


# -- malformed input: a 4xx with the error body, nothing stored --------------------------------

GOOD = {"id": "j", "func": "demo.sleep", "kwargs": {"seconds": 1}, **HOURLY}


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in GOOD.items() if k != key}


MALFORMED_CREATE: list[tuple[Any, str | None]] = [
    ([GOOD], "body"),
    ("a string", "body"),
    (None, "body"),
    ({**_without("hours"), "trigger": "cron", "minute": "99"}, "minute"),
    ({**_without("hours"), "trigger": "cron", "day_of_week": "someday"}, "day_of_week"),
    ({**_without("hours"), "trigger": "interval", "seconds": 0}, "seconds"),
    ({**_without("hours"), "trigger": "interval", "seconds": -5}, "seconds"),
    ({**_without("hours"), "trigger": "interval", "seconds": "5"}, "seconds"),
    ({**_without("hours"), "trigger": "interval"}, "trigger"),
    ({**_without("hours"), "trigger": "weekly"}, "trigger"),
    ({**_without("hours"), "trigger": 5}, "trigger"),
    ({**_without("hours"), "trigger": {"type": ["cron"]}}, "trigger"),
    ({**_without("hours"), "trigger": "cron", "seconds": 5}, "seconds"),
    ({**_without("hours"), "trigger": "date", "run_date": "2030-01-01T00:00:00"}, "run_date"),
    ({**_without("hours"), "trigger": "date", "run_date": "2001-01-01T00:00:00+00:00"},
     "run_date"),
    ({**_without("hours"), "trigger": "date", "run_date": "tomorrow"}, "run_date"),
    ({**GOOD, "timezone": "Mars/Olympus"}, "timezone"),
    ({**GOOD, "colour": "blue"}, "colour"),
    ({**GOOD, "jobstore": "default"}, "jobstore"),
    ({**GOOD, "next_run_time": None}, "next_run_time"),
    (_without("func"), "func"),
    ({**GOOD, "kwargs": []}, "kwargs"),
    ({**GOOD, "kwargs": {}}, "kwargs.seconds"),
    ({**GOOD, "kwargs": {"seconds": "1"}}, "kwargs.seconds"),
    ({**GOOD, "args": "1"}, "args"),
    ({**GOOD, "id": 5}, "id"),
    ({**GOOD, "id": ""}, "id"),
    ({**GOOD, "id": "has space"}, "id"),
    ({**GOOD, "name": ["x"]}, "name"),
    ({**GOOD, "max_instances": "2"}, "max_instances"),
    ({**GOOD, "max_instances": 0}, "max_instances"),
    ({**GOOD, "coalesce": "yes"}, "coalesce"),
    ({**GOOD, "misfire_grace_time": -1}, "misfire_grace_time"),
    ({**GOOD, "replace_existing": "yes"}, "replace_existing"),
]


@pytest.mark.parametrize("body, field", MALFORMED_CREATE)
def test_malformed_create_is_a_4xx_and_stores_nothing(client, body, field):
    before = stored_ids(client)
    response = client.post("/scheduler/jobs", json=body) if body is not None else \
        client.post("/scheduler/jobs", data="")
    body = assert_error(response, 400, field)
    assert body["error"]["code"] == "invalid_request"
    assert stored_ids(client) == before


@pytest.mark.parametrize("data, content_type", [
    ("{not json", "application/json"),
    ("{'single': 'quotes'}", "application/json"),
    ('{"func": NaN}', "application/json"),
    ("func=os:system", "application/x-www-form-urlencoded"),
    (b"\xff\xfe\x00", "application/json"),
    ("[" * 5000 + "]" * 5000, "application/json"),
])
def test_non_json_body_is_a_4xx(client, data, content_type):
    before = stored_ids(client)
    assert_error(client.post("/scheduler/jobs", data=data, content_type=content_type), 400,
                 "body")
    assert_error(client.patch("/scheduler/jobs/nope", data=data, content_type=content_type), 404)
    assert stored_ids(client) == before


def test_too_large_body_is_refused(make_app):
    client = make_app(start=False, MAX_CONTENT_LENGTH=1000).test_client()
    response = client.post("/scheduler/jobs", json={**GOOD, "name": "x" * 2000})
    assert_error(response, 413)


@pytest.mark.parametrize("body, field", [
    ([], "body"),
    ({}, "body"),
    ({"colour": "blue"}, "colour"),
    ({"hours": 2}, "hours"),
    ({"trigger": "cron", "minute": "99"}, "minute"),
    ({"trigger": "interval", "seconds": 0}, "seconds"),
    ({"trigger": "sometimes"}, "trigger"),
    ({"kwargs": {"seconds": "slow"}}, "kwargs.seconds"),
    ({"args": [1, 2, 3]}, "args"),
    ({"func": "demo.echo"}, "func"),
    ({"id": "other"}, "id"),
    ({"name": None}, "name"),
    ({"max_instances": 0}, "max_instances"),
])
def test_malformed_patch_is_a_4xx_and_changes_nothing(client, body, field):
    add(client, **GOOD)
    job = client.get("/scheduler/jobs/j").json
    assert_error(client.patch("/scheduler/jobs/j", json=body), 400, field)
    assert client.get("/scheduler/jobs/j").json == job


def test_patch_arguments_and_no_op_keys(client):
    add(client, **GOOD)
    job = client.patch("/scheduler/jobs/j", json={"args": [0.5, 3]}).json
    assert job["kwargs"] == {"seconds": 0.5, "steps": 3}
    assert client.patch("/scheduler/jobs/j", json={"id": "j", "func": SLEEP_REF}).json == job
    job = client.patch("/scheduler/jobs/j", json={"trigger": {"type": "interval",
                                                              "seconds": 90}}).json
    assert (job["trigger"], job["seconds"]) == ("interval", 90) and "hours" not in job


@pytest.mark.parametrize("method, path", [
    ("get", "/scheduler/jobs/missing"),
    ("delete", "/scheduler/jobs/missing"),
    ("patch", "/scheduler/jobs/missing"),
    ("post", "/scheduler/jobs/missing/pause"),
    ("post", "/scheduler/jobs/missing/resume"),
    ("post", "/scheduler/jobs/missing/run"),
])
def test_unknown_job_is_404(client, method, path):
    before = stored_ids(client)
    response = getattr(client, method)(path, json={"name": "x"})
    body = assert_error(response, 404)
    assert body["error"]["code"] == "not_found"
    assert stored_ids(client) == before
    assert client.get("/api/runs").json["items"] == []


# -- the scheduler controls --------------------------------------------------------------------

def test_pause_resume_shutdown_start(client):
    scheduler = services(client.application).scheduler
    assert_error(client.post("/scheduler/start"), 400)

    assert client.post("/scheduler/pause").status_code == 204
    assert scheduler.state == STATE_PAUSED
    assert client.get("/scheduler").json["running"] is True
    assert client.post("/scheduler/resume").status_code == 204
    assert scheduler.state == STATE_RUNNING

    assert client.post("/scheduler/shutdown").status_code == 204
    assert client.get("/scheduler").json["running"] is False
    for action in ("pause", "resume", "shutdown"):
        assert_error(client.post(f"/scheduler/{action}"), 400)

    assert client.post("/scheduler/start").status_code == 204
    assert client.get("/scheduler").json["running"] is True
    add(client, id="after-restart", func="demo.echo", kwargs={"value": 2})
    runs = wait_for(lambda: client.get("/api/runs?job_id=after-restart").json["items"],
                    message="a fire after the restart")
    assert run_state(client, runs[0]["id"], "succeeded")["result"] == 2


def test_a_web_node_keeps_its_job_loop_paused(make_app):
    client = make_app(SCHEDULER_ROLE="web").test_client()
    assert client.get("/scheduler").json["running"] is True
    assert_error(client.post("/scheduler/resume"), 400)
    assert services(client.application).scheduler.state == STATE_PAUSED


# -- auth: the same as /api --------------------------------------------------------------------

def test_tokens_and_roles(make_app):
    client = make_app(start=False, API_TOKENS={"v": "viewer", "a": "admin"}).test_client()
    viewer = {"Authorization": "Bearer v"}
    admin = {"Authorization": "Bearer a"}

    assert client.get("/scheduler/jobs", headers=viewer).status_code == 200
    assert client.get("/scheduler", headers=viewer).status_code == 200
    before = {j["id"] for j in client.get("/scheduler/jobs", headers=viewer).json}

    body = assert_error(client.post("/scheduler/jobs", json=GOOD, headers=viewer), 403)
    assert body["error"]["code"] == "forbidden"
    for path in ("/scheduler/pause", "/scheduler/start", "/scheduler/shutdown"):
        assert_error(client.post(path, headers=viewer), 403)
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic YTph"}):
        response = client.get("/scheduler/jobs", headers=headers)
        assert_error(response, 401)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert_error(client.post("/scheduler/jobs", json=GOOD, headers=headers), 401)
    assert {j["id"] for j in client.get("/scheduler/jobs", headers=viewer).json} == before

    response = client.post("/scheduler/jobs", json=GOOD, headers=admin)
    assert response.status_code == 200, response.json
    assert client.delete("/scheduler/jobs/j", headers=viewer).status_code == 403
    assert client.delete("/scheduler/jobs/j", headers=admin).status_code == 204


def test_without_tokens_only_loopback_is_admitted(make_app):
    client = make_app(start=False).test_client()
    remote = {"REMOTE_ADDR": "10.1.2.3"}
    assert_error(client.get("/scheduler", environ_base=remote), 401)
    assert_error(client.get("/scheduler/jobs", environ_base=remote), 401)
    assert_error(client.post("/scheduler/jobs", json=GOOD, environ_base=remote), 401)
    assert client.get("/scheduler/jobs/j").status_code == 404  # loopback: admitted
    assert client.get("/scheduler/jobs", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200


def test_prefix_is_configurable(make_app):
    client = make_app(start=False, SCHEDULER_API_PREFIX="/aps").test_client()
    assert client.get("/aps/jobs").status_code == 200
    assert client.get("/scheduler/jobs").status_code == 404


def test_disabled_api_serves_nothing(make_app):
    client = make_app(start=False, SCHEDULER_API_ENABLED=False).test_client()
    assert client.get("/scheduler/jobs").status_code == 404
