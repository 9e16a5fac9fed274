"""The process log: text and JSON lines carry the run they are about, a task's own logging
reaches both its run's log and the process log, and gunicorn's workers log JSON on stderr."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from scheduler_app import logs
from scheduler_app.errors import ConfigError
from scheduler_app.services import services
from tests.conftest import wait_for
from tests.servers import Servers

TEXT_LINE = re.compile(
    r"^(?P<time>\S+) (?P<level>[A-Z]+) \[(?P<pid>\d+)\] (?P<logger>\S+): (?P<message>.*?)"
    r"(?: run=(?P<run>\d+))?(?: job=(?P<job>\S+))?(?: task=(?P<task>\S+))?"
    r"(?: node=(?P<node>\S+))?$")
# gunicorn's own error log lines: "[2026-01-01 00:00:00 +0000] [123] [INFO] Booting worker..."
GUNICORN_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:]+ [+-]\d{4}\] \[\d+\] \[[A-Z]+\] ")


def _record(message: str = "hello %s", *args: Any, exc: bool = False,
            **extra: Any) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("broken")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.getLogger("scheduler_app.test").makeRecord(
        "scheduler_app.test", logging.WARNING, __file__, 1, message, args or ("world",),
        exc_info, extra=extra)
    return record


def _utc(text: str) -> datetime:
    when = datetime.fromisoformat(text)
    offset = when.utcoffset()
    assert offset is not None and offset.total_seconds() == 0, text
    assert abs((datetime.now(UTC) - when).total_seconds()) < 60
    return when


# -- the formats ------------------------------------------------------------------------------

def test_text_line_ends_with_the_run_fields() -> None:
    record = _record(run_id=12, job_id="nightly", task="demo.sleep", node="host:1:abc")
    line = logs.TextFormatter().format(record)
    match = TEXT_LINE.match(line)
    assert match, line
    _utc(match["time"])
    assert match["level"] == "WARNING" and match["logger"] == "scheduler_app.test"
    assert match["message"] == "hello world"
    assert (match["run"], match["job"], match["task"], match["node"]) == \
        ("12", "nightly", "demo.sleep", "host:1:abc")


def test_text_line_shows_only_the_fields_a_record_has() -> None:
    plain = logs.TextFormatter().format(_record())
    assert plain.endswith("scheduler_app.test: hello world")
    no_job = logs.TextFormatter().format(_record(run_id=3, job_id=None, task="demo.echo"))
    assert no_job.endswith("hello world run=3 task=demo.echo")


def test_text_traceback_follows_the_line_with_the_fields() -> None:
    lines = logs.TextFormatter().format(_record(exc=True, run_id=5)).splitlines()
    assert lines[0].endswith("hello world run=5")
    assert lines[1] == "Traceback (most recent call last):"
    assert lines[-1] == "ValueError: broken"


def test_json_line_has_every_field() -> None:
    line = logs.JsonFormatter().format(
        _record(exc=True, run_id=12, job_id="nightly", task="demo.sleep", node="h:1:a"))
    assert "\n" not in line
    entry = json.loads(line)
    _utc(entry.pop("time"))
    assert entry.pop("exception").splitlines()[-1] == "ValueError: broken"
    assert entry == {"level": "WARNING", "logger": "scheduler_app.test",
                     "message": "hello world", "process": entry["process"],
                     "thread": "MainThread", "run_id": 12, "job_id": "nightly",
                     "task": "demo.sleep", "node": "h:1:a"}
    assert isinstance(entry["process"], int)


def test_json_line_leaves_out_absent_fields() -> None:
    entry = json.loads(logs.JsonFormatter().format(_record("a\nb %s", "c")))
    assert entry["message"] == "a\nb c"
    assert not {"run_id", "job_id", "task", "node", "exception"} & set(entry)


@pytest.mark.parametrize("setting, value", [("LOG_FORMAT", "xml"), ("LOG_LEVEL", "LOUD"),
                                            ("LOG_LEVEL", 20)])
def test_a_bad_log_setting_stops_start_up(make_app: Callable[..., Flask], setting: str,
                                          value: Any) -> None:
    with pytest.raises(ConfigError, match=setting):
        make_app(start=False, **{setting: value})


# -- a task's own logging, in-process ---------------------------------------------------------

@pytest.fixture
def process_log() -> Iterator[io.StringIO]:
    """What the service's stderr handler would print, in JSON, captured from the root logger."""
    stream = io.StringIO()
    handler = logs.make_handler("json", stream)
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield stream
    finally:
        root.removeHandler(handler)


def _entries(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_tasks_logging_reaches_its_run_log_and_the_process_log_with_the_run(
        app: Flask, process_log: io.StringIO) -> None:
    client = app.test_client()
    node = services(app).scheduler.node.id
    assert client.post("/api/jobs", json={
        "id": "logger", "task": "testing.logs", "kwargs": {"lines": 1},
        "trigger": {"type": "cron", "expr": "0 3 1 1 *"}}).status_code == 201
    run = client.post("/api/jobs/logger/run").get_json()
    wait_for(lambda: client.get(f"/api/runs/{run['id']}").get_json()["state"] == "succeeded",
             message="the run to succeed")

    run_log = [item["message"] for item in
               client.get(f"/api/runs/{run['id']}/logs").get_json()["items"]]
    assert "from a library logger" in run_log and "ctx line 0" in run_log

    def line(message: str) -> dict[str, Any] | None:
        return next((e for e in _entries(process_log) if e["message"] == message), None)

    fields = {"run_id": run["id"], "job_id": "logger", "task": "testing.logs", "node": node}
    library = wait_for(lambda: line("from a library logger"), message="the library's line")
    assert library["logger"] == "some.library" and library["thread"].startswith("run_")
    assert {k: library.get(k) for k in fields} == fields
    assert {k: line("ctx line 0").get(k) for k in fields} == fields  # type: ignore[union-attr]
    settled = wait_for(lambda: line(f"run {run['id']} succeeded"), message="the outcome line")
    assert {k: settled.get(k) for k in fields} == fields
    # Lines of this process that are not about a run carry no run fields.
    assert all("run_id" not in e for e in _entries(process_log)
               if e["message"].startswith("node ") and e["message"].endswith("started"))


def test_a_failed_run_is_logged_as_a_warning_with_its_error(
        app: Flask, process_log: io.StringIO) -> None:
    client = app.test_client()
    run = client.post("/api/runs", json={"task": "demo.fail",
                                         "kwargs": {"message": "disk full"}}).get_json()
    entry = wait_for(lambda: next((e for e in _entries(process_log)
                                   if e["message"].startswith(f"run {run['id']} failed")), None),
                     message="the failure line")
    assert entry["level"] == "WARNING"
    assert entry["message"] == f"run {run['id']} failed: RuntimeError: disk full"
    assert entry["run_id"] == run["id"] and entry["task"] == "demo.fail"


def test_the_service_handler_follows_the_configured_format() -> None:
    """configure() leaves a test runner's logging alone; with a bare root logger it installs
    one stderr handler, and a second app switches its format instead of adding another."""
    root = logging.getLogger()
    saved = root.handlers[:]
    try:
        root.handlers = [h for h in saved if type(h).__name__ == "RunLogHandler"]
        logs.configure("text", "INFO")
        logs.configure("json", "DEBUG")
        ours = [h for h in root.handlers if isinstance(h, logs.StderrHandler)]
        assert len(ours) == 1 and isinstance(ours[0].formatter, logs.JsonFormatter)
        assert logging.getLogger("scheduler_app").level == logging.DEBUG
        root.handlers = [*saved, *ours]
        logs.configure("text", "INFO")  # with foreign handlers present, ours is still updated
        assert isinstance(ours[0].formatter, logs.TextFormatter)
        root.handlers = saved
        logs.configure("json", "INFO")  # foreign handlers only: nothing is added
        assert root.handlers == saved
    finally:
        root.handlers = saved
        logging.getLogger("scheduler_app").setLevel(logging.INFO)


# -- gunicorn ---------------------------------------------------------------------------------

def test_gunicorn_workers_log_json_on_stderr(tmp_path: Path) -> None:
    with Servers(tmp_path) as servers:
        server = servers.gunicorn({"LOG_FORMAT": "json"})
        server.wait_ready()
        run = server.post("/api/runs", json={"task": "testing.logs",
                                             "kwargs": {"lines": 1}}).json()
        server.wait_run(run["id"], "succeeded")
        assert "from a library logger" in [
            i["message"] for i in server.get_json(f"/api/runs/{run['id']}/logs")["items"]]
        node = server.run(run["id"])["node"]

        def entries() -> list[dict[str, Any]]:
            text = server.log_path.read_text(errors="replace")
            return [json.loads(line) for line in text.splitlines()
                    if line.startswith("{") and line.endswith("}")]

        library = server.wait_for(lambda: next((e for e in entries()
                                                if e["message"] == "from a library logger"),
                                               None), message="the task's log line")
        assert (library["run_id"], library["task"], library["node"]) == \
            (run["id"], "testing.logs", node)
        server.stop()

    lines = server.log_path.read_text(errors="replace").splitlines()
    app_lines = [line for line in lines if not GUNICORN_LINE.match(line)]
    assert len(app_lines) >= 4, lines
    for line in app_lines:
        entry = json.loads(line)  # every line the app wrote is one JSON object
        assert {"time", "level", "logger", "message", "process", "thread"} <= set(entry), line
        _utc(entry["time"])
    messages = [json.loads(line)["message"] for line in app_lines]
    assert any(m.startswith("node ") and m.endswith(" stopped") for m in messages), messages
