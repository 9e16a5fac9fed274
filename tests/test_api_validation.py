"""Bad input to /api/runs and /api/jobs: every refusal is the contract's error shape, names the
offending field, and stores nothing."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask
from werkzeug.test import EnvironBuilder, run_wsgi_app

MAX_BODY = 1024 * 1024  # TestingConfig's MAX_CONTENT_LENGTH

@pytest.fixture
def api(make_app: Callable[..., Flask]) -> Any:
    """A started app without the built-in prune job, so an untouched store lists nothing."""
    return make_app(PRUNE_RUNS_CRON="").test_client()


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.is_json, response.get_data(as_text=True)
    error = response.json["error"]
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    return error  # type: ignore[no-any-return]


def assert_invalid(response: Any, field: str) -> None:
    """400 ``invalid_request`` whose details name ``field``."""
    details = assert_error(response, 400, "invalid_request")["details"]
    assert isinstance(details, list) and details, details
    for detail in details:
        assert set(detail) == {"field", "message"}, detail
        assert isinstance(detail["message"], str) and detail["message"]
    assert field in [d["field"] for d in details], details


def assert_nothing_stored(api: Any) -> None:
    for path in ("/api/jobs", "/api/runs"):
        response = api.get(path)
        assert response.status_code == 200
        assert response.json == {"items": [], "next_cursor": None}, (path, response.json)


def post_raw(api: Any, path: str, data: str | bytes) -> Any:
    return api.post(path, data=data, content_type="application/json")


# -- POST /api/runs -----------------------------------------------------------------------------

@pytest.mark.parametrize("task", ["no.such.task", "os:system", "", "demo"])
def test_run_unknown_task(api: Any, task: str) -> None:
    assert_invalid(api.post("/api/runs", json={"task": task, "kwargs": {}}), "task")
    assert_nothing_stored(api)


@pytest.mark.parametrize("task", [123, None, ["demo.echo"]])
def test_run_task_not_a_string(api: Any, task: Any) -> None:
    assert_invalid(api.post("/api/runs", json={"task": task}), "task")
    assert_nothing_stored(api)


def test_run_missing_task(api: Any) -> None:
    assert_invalid(api.post("/api/runs", json={"kwargs": {"seconds": 1}}), "task")
    assert_nothing_stored(api)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"seconds": "abc"}, "kwargs.seconds"),
    ({"seconds": "5"}, "kwargs.seconds"),  # strict: a numeric string is not a number
    ({"seconds": True}, "kwargs.seconds"),
    ({"seconds": None}, "kwargs.seconds"),
    ({"seconds": [1]}, "kwargs.seconds"),
    pytest.param({"seconds": -1}, "kwargs.seconds"),
    ({"seconds": 1, "steps": 1.5}, "kwargs.steps"),
    ({"seconds": 1, "steps": "10"}, "kwargs.steps"),
    pytest.param({"seconds": 1, "steps": 0}, "kwargs.steps"),
], ids=["abc", "numeric-string", "bool", "null", "list", "negative", "float-for-int",
        "string-for-int", "below-minimum"])
def test_run_wrong_kwarg_types(api: Any, kwargs: dict[str, Any], field: str) -> None:
    assert_invalid(api.post("/api/runs", json={"task": "demo.sleep", "kwargs": kwargs}), field)
    assert_nothing_stored(api)


@pytest.mark.parametrize(("task", "kwargs", "field"), [
    ("demo.sleep", {}, "kwargs.seconds"),
    ("demo.sleep", {"steps": 2}, "kwargs.seconds"),
    ("demo.echo", {}, "kwargs.value"),
])
def test_run_missing_required_kwarg(api: Any, task: str, kwargs: dict[str, Any],
                                    field: str) -> None:
    assert_invalid(api.post("/api/runs", json={"task": task, "kwargs": kwargs}), field)
    assert_nothing_stored(api)


def test_run_missing_kwargs_object_means_no_arguments(api: Any) -> None:
    assert_invalid(api.post("/api/runs", json={"task": "demo.sleep"}), "kwargs.seconds")
    assert_nothing_stored(api)


def test_run_extra_kwarg(api: Any) -> None:
    response = api.post("/api/runs", json={"task": "demo.sleep",
                                           "kwargs": {"seconds": 1, "bogus": 2}})
    assert_invalid(response, "kwargs.bogus")
    assert_nothing_stored(api)


@pytest.mark.parametrize("kwargs", [[1, 2], "seconds=1", None, 5, True])
def test_run_kwargs_not_an_object(api: Any, kwargs: Any) -> None:
    assert_invalid(api.post("/api/runs", json={"task": "demo.echo", "kwargs": kwargs}), "kwargs")
    assert_nothing_stored(api)


def test_run_kwargs_with_out_of_range_float(api: Any) -> None:
    # 1e400 decodes to inf, which JSON cannot carry back out.
    response = post_raw(api, "/api/runs", '{"task": "demo.echo", "kwargs": {"value": 1e400}}')
    assert_error(response, 400, "invalid_request")
    assert_nothing_stored(api)


@pytest.mark.parametrize("run_at", [
    "2030-01-01T09:00:00",          # no offset
    "2030-01-01",                   # a date, no offset
    "tomorrow",
    "2030-13-01T00:00:00+00:00",    # month 13
    "",
    "0001-01-01T00:00:00+01:00",    # valid ISO, but before year 1 in UTC
    "9999-12-31T23:59:59-01:00",    # valid ISO, but after year 9999 in UTC
], ids=["no-offset", "date-only", "words", "month-13", "empty", "underflow", "overflow"])
def test_run_bad_run_at(api: Any, run_at: str) -> None:
    response = api.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": 1},
                                           "run_at": run_at})
    assert_invalid(response, "run_at")
    assert_nothing_stored(api)


@pytest.mark.parametrize("run_at", [1767225600, True, {"at": "2030-01-01T00:00:00Z"}])
def test_run_run_at_not_a_string(api: Any, run_at: Any) -> None:
    response = api.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": 1},
                                           "run_at": run_at})
    assert_invalid(response, "run_at")
    assert_nothing_stored(api)


@pytest.mark.parametrize("body", [
    "not json",
    "{'task': 'demo.echo'}",
    '{"task": "demo.echo", "kwargs": {"value": 1}',
    '{"task": "demo.echo", "kwargs": {"value": NaN}}',
    '{"task": "demo.echo", "kwargs": {"value": Infinity}}',
    '{"task": "demo.echo", "kwargs": {"value": -Infinity}}',
    b'\xff\xfe\x00{',
    "[" * 100_000 + "]" * 100_000,
], ids=["words", "single-quotes", "truncated", "nan", "infinity", "minus-infinity",
        "not-utf8", "nested-too-deep"])
def test_run_body_not_json(api: Any, body: str | bytes) -> None:
    assert_invalid(post_raw(api, "/api/runs", body), "body")
    assert_nothing_stored(api)


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16", "utf-16-be", "utf-32-le"])
def test_run_body_in_any_json_encoding(api: Any, encoding: str) -> None:
    """A body is read as ``json.loads`` reads bytes: UTF-8 (with or without a byte order
    mark), UTF-16 or UTF-32, told apart by its first bytes."""
    body = '{"task": "demo.echo", "kwargs": {"value": "\u00e9t\u00e9"}}'.encode(encoding)
    response = post_raw(api, "/api/runs", body)
    assert response.status_code == 202, response.get_json()
    assert response.get_json()["kwargs"] == {"value": "\u00e9t\u00e9"}


@pytest.mark.parametrize("body", [
    '[{"task": "demo.echo", "kwargs": {"value": 1}}]', "[]", "null", '"demo.echo"', "42",
], ids=["array-of-object", "empty-array", "null", "string", "number"])
def test_run_body_not_an_object(api: Any, body: str) -> None:
    assert_invalid(post_raw(api, "/api/runs", body), "body")
    assert_nothing_stored(api)


@pytest.mark.parametrize("body", [b"", b"   \n "], ids=["empty", "whitespace"])
def test_run_empty_body(api: Any, body: bytes) -> None:
    assert_invalid(post_raw(api, "/api/runs", body), "body")
    assert_invalid(api.post("/api/runs"), "body")  # no body and no content type at all
    assert_nothing_stored(api)


def test_run_unknown_top_level_field(api: Any) -> None:
    response = api.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": 1},
                                           "priority": 5})
    assert_invalid(response, "priority")
    assert_nothing_stored(api)


def test_run_body_too_large(api: Any) -> None:
    body = json.dumps({"task": "demo.echo", "kwargs": {"value": "x" * (2 * MAX_BODY)}})
    response = post_raw(api, "/api/runs", body)
    assert_error(response, 413, "payload_too_large")
    assert_nothing_stored(api)


def post_streamed(api: Any, path: str, body: bytes) -> tuple[int, Any]:
    """POST ``body`` as a WSGI server passes a chunked request: no CONTENT_LENGTH, and
    ``wsgi.input_terminated`` set (gunicorn does this). The test client always sets a length,
    so the app is called directly."""
    environ = EnvironBuilder(path=path, method="POST", input_stream=io.BytesIO(body),
                             content_type="application/json",
                             environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    chunks, status, _headers = run_wsgi_app(api.application, environ, buffered=True)
    return int(status.split()[0]), json.loads(b"".join(chunks))


def test_run_streamed_body_too_large(api: Any) -> None:
    """Werkzeug stops reading a streamed body at MAX_CONTENT_LENGTH without complaint; the
    truncated document must be refused as too large, not judged (or worse, accepted)."""
    body = json.dumps({"task": "demo.echo", "kwargs": {"value": "x" * (2 * MAX_BODY)}}).encode()
    status, answer = post_streamed(api, "/api/runs", body)
    assert status == 413, answer
    assert answer["error"]["code"] == "payload_too_large"
    assert_nothing_stored(api)


def test_run_streamed_body_under_the_limit_is_accepted(api: Any) -> None:
    body = json.dumps({"task": "demo.echo", "kwargs": {"value": "x" * 1000},
                       "run_at": "2999-01-01T00:00:00+00:00"}).encode()
    status, answer = post_streamed(api, "/api/runs", body)
    assert status == 202, answer
    assert answer["kwargs"] == {"value": "x" * 1000}



def post_declared(app: Flask, path: str, body: bytes, declared: str | None = None
                  ) -> tuple[int, Any, io.BytesIO]:
    """POST ``body`` as gunicorn passes a request with a length: CONTENT_LENGTH (``declared``,
    else the body's), and ``wsgi.input_terminated`` set, so the API reads the server's stream
    itself rather than through Werkzeug's guard (the test client sets no such flag). Returns
    the status, the answer and the input stream, to see how much of it was read."""
    stream = io.BytesIO(body)
    environ = EnvironBuilder(path=path, method="POST", input_stream=stream,
                             content_type="application/json",
                             environ_base={"REMOTE_ADDR": "127.0.0.1"}).get_environ()
    environ["CONTENT_LENGTH"] = str(len(body)) if declared is None else declared
    environ["wsgi.input_terminated"] = True
    chunks, status, _headers = run_wsgi_app(app, environ, buffered=True)
    return int(status.split()[0]), json.loads(b"".join(chunks)), stream


def test_run_body_of_declared_length_is_read_once_and_kept(make_app: Callable[..., Flask]
                                                           ) -> None:
    """Read straight from the server's stream, the body is still where Flask keeps it: a
    host's hook reading ``request.get_data()`` after the view sees the same bytes."""
    app = make_app(PRUNE_RUNS_CRON="")
    seen: list[bytes] = []

    @app.after_request
    def _read_again(response: Any) -> Any:
        from flask import request
        seen.append(request.get_data())
        return response

    body = json.dumps({"task": "demo.echo", "kwargs": {"value": "\u00e9t\u00e9"}}).encode()
    status, answer, stream = post_declared(app, "/api/runs", body)
    assert status == 202, answer
    assert answer["kwargs"] == {"value": "\u00e9t\u00e9"}
    assert seen == [body]
    assert stream.tell() == len(body)


def test_run_declared_length_over_the_limit_is_refused_unread(api: Any) -> None:
    """A declared length past MAX_CONTENT_LENGTH is a 413 before a byte of the body is read."""
    body = json.dumps({"task": "demo.echo", "kwargs": {"value": "x" * (2 * MAX_BODY)}}).encode()
    status, answer, stream = post_declared(api.application, "/api/runs", body)
    assert status == 413, answer
    assert answer["error"]["code"] == "payload_too_large"
    assert stream.tell() == 0
    assert_nothing_stored(api)


@pytest.mark.parametrize("declared", ["20", "0"], ids=["shorter-than-body", "zero"])
def test_run_declared_length_that_is_not_the_body_stores_nothing(api: Any, declared: str
                                                                 ) -> None:
    """Only the declared bytes are the body: cut short, it is not JSON; none, it is empty."""
    body = b'{"task": "demo.echo", "kwargs": {"value": 1}}'
    status, answer, _stream = post_declared(api.application, "/api/runs", body, declared)
    assert status == 400, answer
    assert answer["error"]["code"] == "invalid_request"
    assert "body" in [d["field"] for d in answer["error"]["details"]], answer
    assert_nothing_stored(api)

# -- POST /api/jobs -----------------------------------------------------------------------------

def job(**overrides: Any) -> dict[str, Any]:
    """A valid job body, changed by ``overrides``."""
    body: dict[str, Any] = {"task": "demo.echo", "kwargs": {"value": 1},
                            "trigger": {"type": "cron", "expr": "*/5 * * * *"}}
    body.update(overrides)
    return body


def cron(expr: Any, **extra: Any) -> dict[str, Any]:
    return job(trigger={"type": "cron", "expr": expr, **extra})


@pytest.mark.parametrize(("expr", "field"), [
    ("*/5 * * * * *", "trigger.expr"),          # six fields (seconds or year)
    ("* * * *", "trigger.expr"),                # four fields
    ("99 * * * *", "trigger.minute"),           # minute out of range
    ("0 24 * * *", "trigger.hour"),             # hour out of range
    ("0 0 32 * *", "trigger.day"),              # day out of range
    ("0 0 * 13 *", "trigger.month"),            # month out of range
    ("0 9 * * 8", "trigger.day_of_week"),       # weekday out of range
    ("*/0 * * * *", "trigger.minute"),          # zero step
    ("0 9 * * 1-", "trigger.day_of_week"),      # open range
    ("0 9 * * funday", "trigger.day_of_week"),
    ("a b c d e", "trigger.minute"),
    ("", "trigger.expr"),
    ("   ", "trigger.expr"),
], ids=["six-fields", "four-fields", "minute-99", "hour-24", "day-32", "month-13",
        "weekday-8", "zero-step", "open-range", "funday", "letters", "empty", "blank"])
def test_job_bad_cron_expr(api: Any, expr: str, field: str) -> None:
    assert_invalid(api.post("/api/jobs", json=cron(expr)), field)
    assert_nothing_stored(api)


@pytest.mark.parametrize("expr", [5, None, ["*/5", "*", "*", "*", "*"]])
def test_job_cron_expr_not_a_string(api: Any, expr: Any) -> None:
    assert_invalid(api.post("/api/jobs", json=cron(expr)), "trigger.expr")
    assert_nothing_stored(api)


@pytest.mark.parametrize(("fields", "field"), [
    ({"hour": "25"}, "trigger.hour"),
    ({"hour": 25}, "trigger.hour"),
    ({"minute": "0", "hour": "25"}, "trigger.hour"),
    ({"minute": "61"}, "trigger.minute"),
    ({"second": "abc"}, "trigger.second"),
    ({"day_of_week": "funday"}, "trigger.day_of_week"),
    ({"month": "13"}, "trigger.month"),
    ({"hour": 1.5}, "trigger.hour"),
    ({"hour": True}, "trigger.hour"),
    ({"hour": ""}, "trigger.hour"),
])
def test_job_bad_cron_field(api: Any, fields: dict[str, Any], field: str) -> None:
    response = api.post("/api/jobs", json=job(trigger={"type": "cron", **fields}))
    assert_invalid(response, field)
    assert_nothing_stored(api)


def test_job_cron_with_no_fields(api: Any) -> None:
    assert_invalid(api.post("/api/jobs", json=job(trigger={"type": "cron"})), "trigger")
    assert_nothing_stored(api)


def test_job_cron_that_never_fires(api: Any) -> None:
    assert_invalid(api.post("/api/jobs", json=cron("0 0 31 2 *")), "trigger")
    assert_nothing_stored(api)


def test_job_cron_expr_mixed_with_fields(api: Any) -> None:
    assert_invalid(api.post("/api/jobs", json=cron("*/5 * * * *", hour="1")), "trigger.hour")
    assert_nothing_stored(api)


@pytest.mark.parametrize("key", ["start_date", "end_date"])
@pytest.mark.parametrize("value", ["soon", "2030-01-01T00:00:00", "9999-12-31T23:59:59-01:00"],
                         ids=["words", "no-offset", "overflow"])
def test_job_cron_bad_start_or_end(api: Any, key: str, value: str) -> None:
    response = api.post("/api/jobs", json=job(trigger={"type": "cron", "hour": "1", key: value}))
    assert_invalid(response, f"trigger.{key}")
    assert_nothing_stored(api)


@pytest.mark.parametrize(("units", "field"), [
    ({"seconds": 0}, "trigger.seconds"),
    ({"seconds": -5}, "trigger.seconds"),
    ({"seconds": -0.5}, "trigger.seconds"),
    ({"minutes": 0}, "trigger.minutes"),
    ({"seconds": "5"}, "trigger.seconds"),
    ({"seconds": True}, "trigger.seconds"),
    ({"seconds": None}, "trigger.seconds"),
    ({"hours": -1, "minutes": 30}, "trigger.hours"),
    ({"seconds": 0, "minutes": 0}, "trigger"),
    ({}, "trigger"),
    ({"days": 900_000_000}, "trigger"),   # fits a timedelta, not a date
    ({"weeks": 1e10}, "trigger"),         # does not fit a timedelta
    ({"fortnights": 1}, "trigger.fortnights"),
], ids=["zero", "negative", "negative-fraction", "zero-minutes", "string", "bool", "null",
        "one-negative", "all-zero", "no-unit", "too-long", "way-too-long", "unknown-unit"])
def test_job_bad_interval(api: Any, units: dict[str, Any], field: str) -> None:
    response = api.post("/api/jobs", json=job(trigger={"type": "interval", **units}))
    assert_invalid(response, field)
    assert_nothing_stored(api)


def test_job_interval_infinite(api: Any) -> None:
    body = json.dumps(job(trigger={"type": "interval", "seconds": 1})).replace(
        '"seconds": 1', '"seconds": 1e400')
    assert_invalid(post_raw(api, "/api/jobs", body), "trigger.seconds")
    assert_nothing_stored(api)


def test_job_interval_end_before_start(api: Any) -> None:
    trigger = {"type": "interval", "hours": 1, "start_date": "2030-01-02T00:00:00+00:00",
               "end_date": "2030-01-01T00:00:00+00:00"}
    assert_invalid(api.post("/api/jobs", json=job(trigger=trigger)), "trigger.end_date")
    assert_nothing_stored(api)


def test_job_interval_that_ended(api: Any) -> None:
    trigger = {"type": "interval", "hours": 1, "start_date": "2000-01-01T00:00:00+00:00",
               "end_date": "2000-01-02T00:00:00+00:00"}
    assert_invalid(api.post("/api/jobs", json=job(trigger=trigger)), "trigger")
    assert_nothing_stored(api)


@pytest.mark.parametrize("run_date", [
    "next tuesday",
    "2030-01-01 25:00",
    "2030-01-01T09:00:00",            # no offset
    "2030-01-01",                     # no offset
    "2000-01-01T00:00:00+00:00",      # long past
    "0001-01-01T00:00:00+01:00",      # before year 1 in UTC
    None,
    1767225600,
], ids=["words", "hour-25", "no-offset", "date-only", "past", "underflow", "null", "number"])
def test_job_bad_run_date(api: Any, run_date: Any) -> None:
    response = api.post("/api/jobs", json=job(trigger={"type": "date", "run_date": run_date}))
    assert_invalid(response, "trigger.run_date")
    assert_nothing_stored(api)


def test_job_date_without_run_date(api: Any) -> None:
    assert_invalid(api.post("/api/jobs", json=job(trigger={"type": "date"})), "trigger.run_date")
    assert_nothing_stored(api)


@pytest.mark.parametrize("kind", ["weekly", "", "CRON", None, ["cron"]])
def test_job_unknown_trigger_type(api: Any, kind: Any) -> None:
    response = api.post("/api/jobs", json=job(trigger={"type": kind, "expr": "*/5 * * * *"}))
    assert_invalid(response, "trigger.type")
    assert_nothing_stored(api)


def test_job_trigger_without_type(api: Any) -> None:
    response = api.post("/api/jobs", json=job(trigger={"expr": "*/5 * * * *"}))
    assert_invalid(response, "trigger.type")
    assert_nothing_stored(api)


@pytest.mark.parametrize("trigger", ["*/5 * * * *", ["cron", "*/5 * * * *"], None, 5])
def test_job_trigger_not_an_object(api: Any, trigger: Any) -> None:
    assert_invalid(api.post("/api/jobs", json=job(trigger=trigger)), "trigger")
    assert_nothing_stored(api)


def test_job_missing_trigger(api: Any) -> None:
    body = job()
    del body["trigger"]
    assert_invalid(api.post("/api/jobs", json=body), "trigger")
    assert_nothing_stored(api)


@pytest.mark.parametrize("kind", ["cron", "interval", "date"])
def test_job_trigger_unexpected_field(api: Any, kind: str) -> None:
    trigger = {"cron": {"type": "cron", "expr": "*/5 * * * *"},
               "interval": {"type": "interval", "hours": 1},
               "date": {"type": "date", "run_date": "2030-01-01T00:00:00+00:00"}}[kind]
    response = api.post("/api/jobs", json=job(trigger={**trigger, "jitter": 5}))
    assert_invalid(response, "trigger.jitter")
    assert_nothing_stored(api)


@pytest.mark.parametrize("tz", ["Mars/Olympus_Mons", "Europe", "Europe/", "../../etc/passwd",
                                "a" * 300, "UTC\x00", "", 5, None],
                         ids=["unknown", "a-directory", "trailing-slash", "path", "too-long",
                              "nul", "empty", "number", "null"])
@pytest.mark.parametrize("kind", ["expr", "fields", "interval"])
def test_job_unknown_timezone(api: Any, tz: Any, kind: str) -> None:
    trigger = {"expr": {"type": "cron", "expr": "*/5 * * * *"},
               "fields": {"type": "cron", "minute": "*/5"},
               "interval": {"type": "interval", "hours": 1}}[kind]
    response = api.post("/api/jobs", json=job(trigger={**trigger, "timezone": tz}))
    assert_invalid(response, "trigger.timezone")
    assert_nothing_stored(api)


@pytest.mark.parametrize("value", ["2", 0, -1, 1001, True, 1.5],
                         ids=["string", "zero", "negative", "too-many", "bool", "float"])
def test_job_bad_max_instances(api: Any, value: Any) -> None:
    assert_invalid(api.post("/api/jobs", json=job(max_instances=value)), "max_instances")
    assert_nothing_stored(api)


@pytest.mark.parametrize("value", [0, -1, "60", True],
                         ids=["zero", "negative", "string", "bool"])
def test_job_bad_misfire_grace_time(api: Any, value: Any) -> None:
    response = api.post("/api/jobs", json=job(misfire_grace_time=value))
    assert_invalid(response, "misfire_grace_time")
    assert_nothing_stored(api)


def test_job_infinite_misfire_grace_time(api: Any) -> None:
    """1e400 decodes to inf; stored, it made every answer about the job invalid JSON."""
    body = json.dumps(job(misfire_grace_time=60)).replace(
        '"misfire_grace_time": 60', '"misfire_grace_time": 1e400')
    assert_invalid(post_raw(api, "/api/jobs", body), "misfire_grace_time")
    assert_nothing_stored(api)


@pytest.mark.parametrize(("field", "value"), [("coalesce", "yes"), ("coalesce", 1),
                                              ("paused", "no"), ("paused", 0),
                                              ("name", 5), ("name", "n" * 201)])
def test_job_bad_option(api: Any, field: str, value: Any) -> None:
    assert_invalid(api.post("/api/jobs", json=job(**{field: value})), field)
    assert_nothing_stored(api)


def test_job_unknown_task(api: Any) -> None:
    assert_invalid(api.post("/api/jobs", json=job(task="no.such.task")), "task")
    assert_nothing_stored(api)


@pytest.mark.parametrize(("kwargs", "field"), [
    ({}, "kwargs.value"),
    ({"value": 1, "extra": 2}, "kwargs.extra"),
    ([1], "kwargs"),
])
def test_job_invalid_kwargs(api: Any, kwargs: Any, field: str) -> None:
    assert_invalid(api.post("/api/jobs", json=job(kwargs=kwargs)), field)
    assert_nothing_stored(api)


def test_job_wrong_kwarg_type(api: Any) -> None:
    response = api.post("/api/jobs", json=job(task="demo.sleep", kwargs={"seconds": "5"}))
    assert_invalid(response, "kwargs.seconds")
    assert_nothing_stored(api)


def test_job_unknown_top_level_field(api: Any) -> None:
    assert_invalid(api.post("/api/jobs", json=job(func="os:system")), "func")
    assert_nothing_stored(api)


@pytest.mark.parametrize("body", ["not json", "[]", "", '{"task": NaN}'],
                         ids=["words", "array", "empty", "nan"])
def test_job_body_not_a_json_object(api: Any, body: str) -> None:
    assert_invalid(post_raw(api, "/api/jobs", body), "body")
    assert_nothing_stored(api)


def test_job_body_too_large(api: Any) -> None:
    body = json.dumps(job(name="n" * (2 * MAX_BODY)))
    assert_error(post_raw(api, "/api/jobs", body), 413, "payload_too_large")
    assert_nothing_stored(api)


@pytest.mark.parametrize("job_id", ["has space", "slash/inside", "-leading-dash", ".hidden",
                                    "ümlaut", "new\nline", "", "x" * 192, 5],
                         ids=["space", "slash", "leading-dash", "leading-dot", "non-ascii",
                              "newline", "empty", "too-long", "number"])
def test_job_invalid_id(api: Any, job_id: Any) -> None:
    assert_invalid(api.post("/api/jobs", json=job(id=job_id)), "id")
    assert_nothing_stored(api)


def test_job_duplicate_id_conflicts_and_keeps_the_first(api: Any) -> None:
    first = api.post("/api/jobs", json=job(id="nightly", name="first"))
    assert first.status_code == 201, first.json
    response = api.post("/api/jobs", json=job(id="nightly", name="second", task="demo.sleep",
                                              kwargs={"seconds": 1},
                                              trigger={"type": "interval", "seconds": 30}))
    assert_error(response, 409, "conflict")
    assert api.get("/api/jobs/nightly").json == first.json
    assert [j["id"] for j in api.get("/api/jobs").json["items"]] == ["nightly"]
    assert api.get("/api/runs").json["items"] == []


# -- unknown ids ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path"), [
    ("GET", "/api/jobs/nope"),
    ("PATCH", "/api/jobs/nope"),
    ("DELETE", "/api/jobs/nope"),
    ("POST", "/api/jobs/nope/pause"),
    ("POST", "/api/jobs/nope/resume"),
    ("POST", "/api/jobs/nope/run"),
    ("GET", "/api/runs/999999"),
    ("POST", "/api/runs/999999/cancel"),
    ("GET", "/api/runs/999999/logs"),
    ("GET", "/api/runs/abc"),
    ("POST", "/api/runs/abc/cancel"),
    ("GET", "/api/runs/abc/logs"),
    ("GET", "/api/runs/-1"),
    ("GET", f"/api/runs/{2 ** 64}"),
    ("POST", f"/api/runs/{2 ** 64}/cancel"),
    ("GET", f"/api/runs/{2 ** 64}/logs"),
    ("GET", "/api/runs/" + "9" * 5000),
])
def test_unknown_id_is_404(api: Any, method: str, path: str) -> None:
    response = api.open(path, method=method, json={"name": "x"} if method == "PATCH" else None)
    assert_error(response, 404, "not_found")
    assert_nothing_stored(api)


def test_patch_unknown_job_with_bad_body_is_still_404(api: Any) -> None:
    response = api.patch("/api/jobs/nope", data="not json", content_type="application/json")
    assert_error(response, 404, "not_found")
    assert_nothing_stored(api)


# -- list parameters ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/api/runs", "/api/jobs"])
@pytest.mark.parametrize("limit", ["0", "501", "abc", "-1", "1.5", "", " 5", "\u00b2", "\u0661",
                                   "9" * 5000],
                         ids=["zero", "501", "abc", "negative", "float", "empty", "space",
                              "superscript-two", "arabic-one", "5000-digits"])
def test_bad_limit(api: Any, path: str, limit: str) -> None:
    assert_invalid(api.get(path, query_string={"limit": limit}), "limit")


@pytest.mark.parametrize("path", ["/api/runs", "/api/jobs"])
@pytest.mark.parametrize("cursor", ["garbage", "-5", "1.5", "\u00b2", "9" * 30],
                         ids=["garbage", "negative", "float", "superscript-two", "huge"])
def test_bad_cursor(api: Any, path: str, cursor: str) -> None:
    assert_invalid(api.get(path, query_string={"cursor": cursor}), "cursor")


@pytest.mark.parametrize(("param", "value"), [("limit", "0"), ("limit", "501"),
                                              ("limit", "abc"), ("cursor", "garbage"),
                                              ("cursor", "\u00b2")])
def test_bad_log_list_parameters(api: Any, param: str, value: str) -> None:
    run = api.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": 1},
                                      "run_at": "2999-01-01T00:00:00+00:00"}).json
    assert_invalid(api.get(f"/api/runs/{run['id']}/logs", query_string={param: value}), param)


@pytest.mark.parametrize("state", ["bogus", "QUEUED", "done"])
def test_bad_run_state_filter(api: Any, state: str) -> None:
    assert_invalid(api.get("/api/runs", query_string={"state": state}), "state")


@pytest.mark.parametrize("paused", ["maybe", "2", "paused"])
def test_bad_paused_filter(api: Any, paused: str) -> None:
    assert_invalid(api.get("/api/jobs", query_string={"paused": paused}), "paused")


@pytest.mark.parametrize("limit", ["1", "500", "050"])
def test_good_limits_are_accepted(api: Any, limit: str) -> None:
    for path in ("/api/runs", "/api/jobs"):
        response = api.get(path, query_string={"limit": limit})
        assert response.status_code == 200, response.json
