"""Jobs declared in configuration (``JOBS``): created or updated by id at start, idempotently
across processes starting together; a bad declaration stops start-up and writes nothing."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from scheduler_app import start_scheduler, stop_scheduler
from scheduler_app.errors import ConfigError
from scheduler_app.services import services
from tests.servers import Servers, db_rows

# Far from now, so no fire changes a row's version while a test looks at it.
NIGHTLY = {"id": "nightly", "func": "demo.echo", "args": ["hello"], "trigger": "cron",
           "month": "1", "day": "1", "hour": "3", "minute": "0"}
REPORT = {"id": "report", "task": "demo.sleep", "kwargs": {"seconds": 1, "steps": 2},
          "trigger": {"type": "cron", "expr": "15 4 1 1 *"}, "max_instances": 2}


def _jobs(db_path: Path) -> dict[str, Any]:
    """The job table's rows by id (none if start-up stopped before making the table)."""
    if not db_path.exists() or not db_rows(
            db_path, "SELECT name FROM sqlite_master WHERE name = 'scheduler_jobs'"):
        return {}
    return {row["id"]: row for row in db_rows(db_path, "SELECT * FROM scheduler_jobs")}


def _db_path(db_url: str) -> Path:
    return Path(db_url.removeprefix("sqlite:///"))


def test_four_workers_starting_together_leave_one_job_per_id(tmp_path: Path) -> None:
    with Servers(tmp_path) as servers:
        server = servers.gunicorn({"GUNICORN_WORKERS": "4", "JOBS": [NIGHTLY, REPORT]})

        def installed() -> set[str]:
            text = server.log_path.read_text(errors="replace")
            return set(re.findall(r"\[(\d+)\] scheduler_app\.declared_jobs: declared jobs in "
                                  r"place: nightly, report", text))

        server.wait_for(lambda: len(installed()) == 4, timeout=30,
                        message="four workers to install the declared jobs")
        rows = _jobs(servers.db_path)
        assert sorted(rows) == ["maintenance.prune_runs", "nightly", "report"]
        # Written once: the three workers that came second found it as declared, wrote nothing.
        assert rows["nightly"]["version"] == 1 and rows["report"]["version"] == 1
        job = server.get_json("/api/jobs/nightly")
        assert (job["task"], job["kwargs"]) == ("demo.echo", {"value": "hello"})
        assert job["trigger"] == {"type": "cron", "month": "1", "day": "1", "hour": "3",
                                  "minute": "0", "description": job["trigger"]["description"]}
        report = server.get_json("/api/jobs/report")
        assert (report["kwargs"], report["max_instances"]) == ({"seconds": 1, "steps": 2}, 2)
        assert len(server.get_json("/api/nodes")["items"]) == 4
        log = server.log_path.read_text(errors="replace")
        assert "Traceback" not in log and "not written" not in log


def test_a_changed_declaration_updates_the_job_on_the_next_start(
        make_app: Callable[..., Flask], db_url: str) -> None:
    first = make_app(JOBS=[NIGHTLY, REPORT])
    before = services(first).jobs.get("nightly")
    stop_scheduler(first)

    again = make_app(JOBS=[NIGHTLY, REPORT])  # the same declarations: nothing is written
    assert services(again).jobs.get("nightly").version == before.version
    services(again).jobs.pause("report")  # the operator's pause outlives restarts
    stop_scheduler(again)

    changed = {**NIGHTLY, "hour": "5", "args": ["bye"]}
    third = make_app(JOBS=[changed, {**REPORT, "max_instances": 3}])
    after = services(third).jobs.get("nightly")
    assert after.spec["trigger"]["hour"] == "5" and after.spec["kwargs"] == {"value": "bye"}
    assert after.version == before.version + 1
    assert after.next_run_time is not None and after.next_run_time.hour == 5
    report = services(third).jobs.get("report")
    assert report.spec["max_instances"] == 3 and report.next_run_time is None
    assert sorted(_jobs(_db_path(db_url))) == ["maintenance.prune_runs", "nightly", "report"]


def test_flask_apschedulers_shapes_are_read_as_its_api_reads_them(
        make_app: Callable[..., Flask]) -> None:
    from scheduler_app.tasks.demo import echo

    app = make_app(JOBS=[
        {"id": "by-ref", "func": "scheduler_app.tasks.demo:echo", "kwargs": {"value": 1},
         "trigger": "interval", "hours": 6, "replace_existing": True},
        {"id": "by-function", "func": echo, "args": (2,), "trigger": {"type": "cron",
                                                                     "hour": "1"}},
        {"id": "api-shape", "task": "demo.echo", "kwargs": {"value": 3}, "paused": True,
         "trigger": {"type": "interval", "minutes": 30}},
    ])
    jobs = services(app).jobs
    assert jobs.get("by-ref").spec["trigger"]["hours"] == 6
    assert jobs.get("by-function").spec["kwargs"] == {"value": 2}
    assert jobs.get("api-shape").next_run_time is None


def test_a_passed_one_off_date_is_skipped_not_fatal(make_app: Callable[..., Flask],
                                                   caplog: pytest.LogCaptureFixture) -> None:
    app = make_app(JOBS=[{"id": "once", "func": "demo.echo", "args": [1], "trigger": "date",
                          "run_date": "2020-01-01T00:00:00+00:00"}, NIGHTLY])
    assert "declared job once: its date trigger has passed; not created" in caplog.text
    assert {r.id for r in services(app).jobs.find(task="demo.echo", paused=None, limit=10,
                                                    cursor=None)[0]} == {"nightly"}


@pytest.mark.parametrize("declaration, error", [
    ({"id": "bad", "func": "nope.missing", "trigger": "interval", "seconds": 5},
     r"JOBS\[1\] \(id 'bad'\): func: 'nope.missing' is not a registered task"),
    ({"id": "bad", "task": "nope.missing", "trigger": {"type": "interval", "seconds": 5}},
     r"JOBS\[1\] \(id 'bad'\): task: unknown task 'nope.missing'"),
    ({"id": "bad", "func": "os:system", "args": ["touch /tmp/pwned"], "trigger": "date"},
     r"JOBS\[1\] \(id 'bad'\): func: 'os:system' is not a registered task"),
    ({"id": "bad", "func": "demo.echo", "args": [1], "trigger": "cron", "minute": "99"},
     r"JOBS\[1\] \(id 'bad'\): minute: .*59"),
    ({"id": "bad", "task": "demo.echo", "kwargs": {"value": 1},
      "trigger": {"type": "cron", "expr": "99 * * * *"}},
     r"JOBS\[1\] \(id 'bad'\): trigger\.minute: 99 is out of range 0-59"),
    ({"id": "bad", "func": "demo.sleep", "kwargs": {"seconds": "soon"}, "trigger": "interval",
      "minutes": 1}, r"JOBS\[1\] \(id 'bad'\): kwargs\.seconds: "),
    ({"id": "bad", "func": "demo.echo", "args": [1]}, r"JOBS\[1\] \(id 'bad'\): trigger: is "
                                                       "required"),
    ({"id": "bad", "func": "demo.echo", "task": "demo.echo", "trigger": "date"},
     r"JOBS\[1\] \(id 'bad'\): task: give either func"),
    ({"id": "bad", "func": "demo.echo", "args": [1], "trigger": "interval", "hours": 1,
      "jobstore": "other"}, r"JOBS\[1\] \(id 'bad'\): jobstore: unexpected field"),
    ({"func": "demo.echo", "trigger": "interval", "hours": 1}, r"JOBS\[1\]: id is required"),
    ({**NIGHTLY}, r"JOBS\[1\] \(id 'nightly'\): id is declared twice"),
])
def test_a_bad_declaration_stops_start_up_and_writes_nothing(
        make_app: Callable[..., Flask], db_url: str, declaration: dict[str, Any],
        error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        make_app(start=False, JOBS=[NIGHTLY, declaration])
    assert _jobs(_db_path(db_url)) == {}


@pytest.mark.parametrize("jobs", ["nightly", [1, 2], {"id": "x"}])
def test_jobs_must_be_a_list_of_objects(make_app: Callable[..., Flask], jobs: Any) -> None:
    with pytest.raises(ConfigError, match="JOBS must be a list of job objects"):
        make_app(start=False, JOBS=jobs)


def test_gunicorn_refuses_to_start_with_a_bad_declaration(tmp_path: Path) -> None:
    with Servers(tmp_path) as servers:
        server = servers.gunicorn({"JOBS": [NIGHTLY, {"id": "evil", "func": "os:system",
                                                      "args": ["id"], "trigger": "date"}]},
                                  wait=False)
        assert server.wait_exit(timeout=30) != 0
        log = server.log_tail(200)
        assert "JOBS[1] (id 'evil'): func: 'os:system' is not a registered task" in log
    assert _jobs(servers.db_path) == {}


def test_a_worker_node_leaves_declared_jobs_to_the_others(make_app: Callable[..., Flask],
                                                           db_url: str) -> None:
    app = make_app(start=False, SCHEDULER_ROLE="worker", JOBS=[NIGHTLY])
    start_scheduler(app)
    assert "nightly" not in _jobs(_db_path(db_url))
