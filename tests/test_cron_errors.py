"""A bad cron field is named with its allowed range, over HTTP, the CLI and Python alike, and
a job body with several problems names all of them in one answer; nothing is stored.

Field paths: ``trigger.<field>`` (``trigger.minute``) for both the crontab ``expr`` form and
the field-by-field form; the Flask-APScheduler shapes (``/scheduler``, ``Scheduler.add_job``)
give cron fields at the top level, so there the field is named as written (``minute``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from scheduler_app.errors import ConfigError
from scheduler_app.services import services
from tests.test_extension import add, make_host, scheduler  # noqa: F401 (make_host: fixture)

BUILT_IN = ["maintenance.prune_runs"]

# (crontab expression, field, message)
EXPR_CASES = [
    ("60 * * * *", "trigger.minute", "60 is out of range 0-59"),
    ("99 * * * *", "trigger.minute", "99 is out of range 0-59"),
    ("0 24 * * *", "trigger.hour", "24 is out of range 0-23"),
    ("0 25 * * *", "trigger.hour", "25 is out of range 0-23"),
    ("0 0 0 * *", "trigger.day", "0 is out of range 1-31"),
    ("0 0 32 * *", "trigger.day", "32 is out of range 1-31"),
    ("0 0 1 0 *", "trigger.month", "0 is out of range 1-12"),
    ("0 0 1 13 *", "trigger.month", "13 is out of range 1-12"),
    ("0 0 * * 8", "trigger.day_of_week", "8 is out of range 0-7"),
    ("*/0 * * * *", "trigger.minute", "*/0: a step must be at least 1"),
    ("0 */0 * * *", "trigger.hour", "*/0: a step must be at least 1"),
    ("0 0 * * */0", "trigger.day_of_week", "*/0: a step must be at least 1"),
    ("30-10 * * * *", "trigger.minute", "30-10: a range must run from low to high"),
    ("0 0 * * 5-2", "trigger.day_of_week", "5-2: a range must run from low to high"),
    ("abc * * * *", "trigger.minute",
     "'abc' is not a value, range (a-b), step (*/n) or list (a,b) in range 0-59"),
    ("1,2,99 * * * *", "trigger.minute", "99 is out of range 0-59"),
    ("* * *", "trigger.expr",
     "a crontab expression has 5 fields (minute hour day month weekday); got 3"),
    ("* * * * * *", "trigger.expr",
     "a crontab expression has 5 fields (minute hour day month weekday); got 6"),
]
EXPR_IDS = ["minute-60", "minute-99", "hour-24", "hour-25", "day-0", "day-32", "month-0",
            "month-13", "weekday-8", "step-0", "hour-step-0", "weekday-step-0",
            "reversed-range", "reversed-weekdays", "garbage", "in-a-list", "three-fields",
            "six-fields"]

# (fields given one by one, field, message): APScheduler's ranges (day_of_week 0 = Monday)
FIELD_CASES = [
    ({"minute": "99"}, "trigger.minute", "99 is out of range 0-59"),
    ({"minute": 60}, "trigger.minute", "60 is out of range 0-59"),
    ({"second": "60"}, "trigger.second", "60 is out of range 0-59"),
    ({"hour": "24"}, "trigger.hour", "24 is out of range 0-23"),
    ({"day": "0"}, "trigger.day", "0 is out of range 1-31"),
    ({"month": "13"}, "trigger.month", "13 is out of range 1-12"),
    ({"day_of_week": "7"}, "trigger.day_of_week", "7 is out of range 0-6"),
    ({"year": "1969"}, "trigger.year", "1969 is out of range 1970-9999"),
    ({"week": "54"}, "trigger.week", "54 is out of range 1-53"),
    ({"minute": "*/0"}, "trigger.minute", "*/0: a step must be at least 1"),
    ({"month": "mar-jan"}, "trigger.month", "mar-jan: a range must run from low to high"),
    ({"day_of_week": "funday"}, "trigger.day_of_week", "'funday' is not a day of week name"),
]
FIELD_IDS = ["minute", "minute-int", "second", "hour", "day", "month", "day_of_week", "year",
             "week", "step-0", "reversed-months", "bad-weekday-name"]


def job(trigger: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "j", "task": "demo.echo", "kwargs": {"value": 1}, "trigger": trigger, **extra}


def stored(app: Flask) -> list[str]:
    return [j.id for j in services(app).store.jobs.all()]


def details(response: Any) -> list[dict[str, str]]:
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert error["code"] == "invalid_request"
    assert error["message"] == "; ".join(f"{d['field']}: {d['message']}"
                                         for d in error["details"])
    return list(error["details"])


# -- HTTP ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("expr", "field", "message"), EXPR_CASES, ids=EXPR_IDS)
def test_a_bad_crontab_field_is_named_with_its_range(app: Flask, client: Any, expr: str,
                                                     field: str, message: str) -> None:
    response = client.post("/api/jobs", json=job({"type": "cron", "expr": expr}))
    assert details(response) == [{"field": field, "message": message}]
    assert response.json["error"]["message"] == f"{field}: {message}"
    assert stored(app) == BUILT_IN


@pytest.mark.parametrize(("fields", "field", "message"), FIELD_CASES, ids=FIELD_IDS)
def test_a_bad_cron_field_given_alone_is_named_with_its_range(
        app: Flask, client: Any, fields: dict[str, Any], field: str, message: str) -> None:
    response = client.post("/api/jobs", json=job({"type": "cron", **fields}))
    assert details(response) == [{"field": field, "message": message}]
    assert stored(app) == BUILT_IN


@pytest.mark.parametrize("expr", ["0 9 * * 0", "0 9 * * 7", "0 9 * * 5-7", "*/15 * * * *",
                                  "0 0 1 jan,jul *", "0 9 * * mon-fri", "5/20 0-23/6 * * *"])
def test_valid_crontab_expressions_are_still_accepted(client: Any, expr: str) -> None:
    response = client.post("/api/jobs", json=job({"type": "cron", "expr": expr}))
    assert response.status_code == 201, response.json


@pytest.mark.parametrize("fields", [{"day": "last"}, {"day": "2nd mon"},
                                    {"day_of_week": "mon-fri", "hour": 9}, {"second": "*/30"}])
def test_valid_cron_fields_are_still_accepted(client: Any, fields: dict[str, Any]) -> None:
    response = client.post("/api/jobs", json=job({"type": "cron", **fields}))
    assert response.status_code == 201, response.json


@pytest.mark.parametrize("trigger", [{"type": "cron", "expr": "99 25 * * *"},
                                     {"type": "cron", "hour": "25", "minute": "99"}],
                         ids=["expr", "fields"])
def test_several_bad_cron_fields_are_all_named(app: Flask, client: Any,
                                               trigger: dict[str, Any]) -> None:
    found = details(client.post("/api/jobs", json=job(trigger)))
    assert sorted(found, key=lambda d: d["field"]) == [
        {"field": "trigger.hour", "message": "25 is out of range 0-23"},
        {"field": "trigger.minute", "message": "99 is out of range 0-59"}]
    assert stored(app) == BUILT_IN


def test_every_problem_of_a_job_body_is_named_at_once(app: Flask, client: Any) -> None:
    response = client.post("/api/jobs", json={
        "id": "", "task": "demo.sleep", "kwargs": {"seconds": "soon"}, "max_instances": 0,
        "trigger": {"type": "cron", "expr": "99 25 * * *"}})
    fields = [d["field"] for d in details(response)]
    assert sorted(fields) == ["id", "kwargs.seconds", "max_instances", "trigger.hour",
                              "trigger.minute"]
    assert stored(app) == BUILT_IN


def test_an_unknown_task_and_a_bad_trigger_are_named_together(app: Flask,
                                                              client: Any) -> None:
    response = client.post("/api/jobs", json={
        "task": "no.such", "trigger": {"type": "cron", "minute": "99"}})
    assert [d["field"] for d in details(response)] == ["task", "trigger.minute"]
    assert stored(app) == BUILT_IN


def test_a_patch_names_every_problem_and_changes_nothing(client: Any) -> None:
    created = client.post("/api/jobs", json={
        "id": "p", "task": "demo.sleep", "kwargs": {"seconds": 1},
        "trigger": {"type": "cron", "expr": "0 9 * * *"}})
    assert created.status_code == 201, created.json
    response = client.patch("/api/jobs/p", json={
        "max_instances": 0, "kwargs": {"seconds": "soon"},
        "trigger": {"type": "cron", "expr": "99 25 * * *"}})
    assert sorted(d["field"] for d in details(response)) == [
        "kwargs.seconds", "max_instances", "trigger.hour", "trigger.minute"]
    valid_body = client.patch("/api/jobs/p", json={
        "kwargs": {"seconds": "soon"}, "trigger": {"type": "cron", "expr": "99 * * * *"}})
    assert [d["field"] for d in details(valid_body)] == ["kwargs.seconds", "trigger.minute"]
    job_now = client.get("/api/jobs/p").json
    assert job_now["trigger"]["expr"] == "0 9 * * *" and job_now["kwargs"] == {"seconds": 1}
    assert job_now["max_instances"] == created.json["max_instances"]


def test_the_builtin_api_names_every_problem_as_the_client_wrote_it(app: Flask,
                                                                    client: Any) -> None:
    response = client.post("/scheduler/jobs", json={
        "id": "b", "func": "demo.sleep", "args": ["soon"], "max_instances": 0,
        "trigger": "cron", "minute": "99", "hour": "25"})
    found = {d["field"]: d["message"] for d in details(response)}
    assert sorted(found) == ["args.0", "hour", "max_instances", "minute"]
    assert found["minute"] == "99 is out of range 0-59"
    assert found["hour"] == "25 is out of range 0-23"
    unregistered = client.post("/scheduler/jobs", json={
        "id": "b", "func": "os:system", "trigger": {"type": "cron", "minute": "99"}})
    # the legacy inline form: the field sits inside "trigger", as the client wrote it
    assert [d["field"] for d in details(unregistered)] == ["func", "trigger.minute"]
    assert stored(app) == BUILT_IN


def test_the_preview_names_every_bad_field(client: Any) -> None:
    response = client.post("/api/triggers/preview",
                           json={"trigger": {"type": "cron", "expr": "99 25 * * *"}})
    assert details(response) == [
        {"field": "trigger.minute", "message": "99 is out of range 0-59"},
        {"field": "trigger.hour", "message": "25 is out of range 0-23"}]


# -- CLI ----------------------------------------------------------------------------------------

def add_by_cli(app: Flask, cron: str) -> Any:
    return app.test_cli_runner().invoke(args=[
        "jobs", "add", "demo.echo", "--id", "c", "--kwargs", '{"value": 1}', "--cron", cron])


@pytest.mark.parametrize(("expr", "field", "message"), EXPR_CASES, ids=EXPR_IDS)
def test_the_cli_names_the_field_and_its_range(app: Flask, expr: str, field: str,
                                               message: str) -> None:
    result = add_by_cli(app, expr)
    assert result.exit_code != 0
    assert f"{field}: {message}" in result.output
    assert stored(app) == BUILT_IN


def test_the_cli_names_several_bad_fields(app: Flask) -> None:
    result = add_by_cli(app, "99 25 * * *")
    assert result.exit_code != 0
    assert "trigger.minute: 99 is out of range 0-59" in result.output
    assert "trigger.hour: 25 is out of range 0-23" in result.output
    assert stored(app) == BUILT_IN


# -- Python -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("fields", "field", "message"), FIELD_CASES, ids=FIELD_IDS)
def test_add_job_names_the_field_and_its_range(make_host: Callable[..., Flask],  # noqa: F811
                                               fields: dict[str, Any], field: str,
                                               message: str) -> None:
    app = make_host(start=False)
    with app.app_context():
        with pytest.raises(ValueError) as error:
            scheduler.add_job("bad", add, trigger="cron", kwargs={"a": 1}, **fields)
        # Flask-APScheduler's shape: the field is named as written, at the top level
        assert str(error.value) == f"{field.removeprefix('trigger.')}: {message}"
        assert scheduler.get_job("bad") is None


def test_add_job_names_every_problem_at_once(make_host: Callable[..., Flask]  # noqa: F811
                                             ) -> None:
    app = make_host(start=False)
    with app.app_context():
        with pytest.raises(ValueError) as error:
            scheduler.add_job("bad", add, trigger="cron", hour="25", minute="99",
                              kwargs={"a": "x"}, max_instances=0)
        message = str(error.value)
        for part in ("hour: 25 is out of range 0-23", "minute: 99 is out of range 0-59",
                     "kwargs.a", "max_instances"):
            assert part in message
        assert scheduler.get_job("bad") is None


# -- JOBS in the configuration ------------------------------------------------------------------

def test_a_declared_job_names_every_problem(make_app: Callable[..., Flask]) -> None:
    with pytest.raises(ConfigError) as error:
        make_app(start=False, JOBS=[{
            "id": "bad", "task": "demo.sleep", "kwargs": {"seconds": "soon"},
            "max_instances": 0, "trigger": {"type": "cron", "expr": "99 25 * * *"}}])
    message = str(error.value)
    for part in ("trigger.minute: 99 is out of range 0-59", "trigger.hour: 25 is out of range "
                 "0-23", "kwargs.seconds", "max_instances"):
        assert part in message, message


def test_a_builtin_api_patch_names_every_problem(client: Any) -> None:
    created = client.post("/scheduler/jobs", json={
        "id": "m", "func": "demo.sleep", "kwargs": {"seconds": 1}, "trigger": "cron",
        "hour": "9"})
    assert created.status_code == 200, created.json
    response = client.patch("/scheduler/jobs/m", json={
        "max_instances": 0, "kwargs": {"seconds": "soon"}, "trigger": "cron", "minute": "99",
        "hour": "25"})
    found = {d["field"]: d["message"] for d in details(response)}
    assert sorted(found) == ["hour", "kwargs.seconds", "max_instances", "minute"]
    assert found["minute"] == "99 is out of range 0-59"
    assert str(client.get("/scheduler/jobs/m").json["hour"]) == "9"
