"""The extension in a host app of its own: ``Scheduler``, ``init_app``, tasks, runs and jobs
from Python, and what it leaves alone in the host."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, current_app, jsonify, session
from sqlalchemy.orm import Session

from scheduler_app import APScheduler, RunContext, RunHandle, Scheduler, current_run
from scheduler_app.errors import ConfigError
from scheduler_app.store.schema import TABLE_PREFIX

from .conftest import wait_for

scheduler = Scheduler()
seen_in_task: dict[str, Any] = {}


@scheduler.task
def add(a: int, b: int = 1) -> int:
    """Add two numbers (a task without a context parameter)."""
    current_run().progress(1, 1, "added")
    seen_in_task["app"] = current_app.name
    seen_in_task["marker"] = current_app.config.get("HOST_MARKER")
    return a + b


@scheduler.task(name="extension_tests.report", max_attempts=2, timeout=30)
def report(ctx: RunContext, steps: int) -> dict[str, int]:
    for step in range(steps):
        ctx.progress(step + 1, steps)
    return {"steps": steps, "attempt": ctx.attempt}


@scheduler.task
def double(x: int) -> int:
    return 2 * x


@scheduler.task(name="extension_tests.fails")
def fails(message: str) -> None:
    raise RuntimeError(message)


@scheduler.task("interval", id="extension-tests-tick", seconds=1, misfire_grace_time=30)
def tick() -> str:
    return "tick"


def host_app(db_url: str, **config: Any) -> Flask:
    """A host app as a developer writes it: its own index, 404 handler and session."""
    app = Flask("host_for_tests")
    app.config.update(SECRET_KEY="host-secret", HOST_MARKER="the host", TESTING=True,
                      SCHEDULER_DATABASE_URL=db_url, SCHEDULER_TICK_SECONDS=0.1,
                      SCHEDULER_DISPATCH_POLL_SECONDS=0.2, SCHEDULER_RETRY_BACKOFF_SECONDS=0.05)
    app.config.update(config)

    @app.get("/")
    def index() -> str:
        session["visits"] = session.get("visits", 0) + 1
        return f"host index {session['visits']}"

    @app.errorhandler(404)
    def not_found(_: Exception) -> Any:
        return jsonify(host="not here"), 404

    return app


def running_host(extension: Scheduler, db_url: str) -> Iterator[Flask]:
    """For a fixture: a host app with ``extension`` started on ``db_url`` (no pruning job),
    stopped and its database closed at the end (``yield from running_host(...)``)."""
    app = host_app(db_url, SCHEDULER_PRUNE_RUNS_CRON="")
    extension.init_app(app)
    extension.start(app=app)
    yield app
    extension.shutdown(app=app)
    app.extensions["scheduler_app"].store.db.dispose()


@pytest.fixture
def make_host(db_url: str) -> Iterator[Callable[..., Flask]]:
    apps: list[Flask] = []

    def build(start: bool = True, extension: Scheduler = scheduler, **config: Any) -> Flask:
        app = host_app(config.pop("db_url", db_url), **config)
        extension.init_app(app)
        apps.append(app)
        if start:
            extension.start(app=app)
        return app

    yield build
    for app in apps:
        state = app.extensions["scheduler_app"]
        state.extension.shutdown(app=app)
        state.store.db.dispose()


# -- living in someone else's app ---------------------------------------------------------------

def test_init_app_changes_nothing_global_in_the_host(db_url: str) -> None:
    app = host_app(db_url)
    before = {
        "config": dict(app.config),
        "session_interface": type(app.session_interface),
        "json_sort": app.json.sort_keys,  # type: ignore[attr-defined]
        "error_handlers": {k: dict(v) for k, v in app.error_handler_spec[None].items()},
        "before_request": list(app.before_request_funcs.get(None, [])),  # app-wide hooks
        "root_logger": (logging.getLogger().level, list(logging.getLogger().handlers)),
    }
    threads = set(threading.enumerate())
    Scheduler(app)
    try:
        added = {k: v for k, v in app.config.items() if k not in before["config"]}
        assert added == {}, "init_app wrote config keys"
        assert type(app.session_interface) is before["session_interface"]
        assert app.json.sort_keys == before["json_sort"]  # type: ignore[attr-defined]
        assert {k: dict(v) for k, v in app.error_handler_spec[None].items()} == \
            before["error_handlers"]
        assert list(app.before_request_funcs.get(None, [])) == before["before_request"]
        assert (logging.getLogger().level, list(logging.getLogger().handlers)) == \
            before["root_logger"]
        assert not hasattr(app, "apscheduler")
        # New threads only: another test's thread may end meanwhile.
        assert set(threading.enumerate()) - threads == set(), "init_app started a thread"
        assert all(name.startswith("scheduler_app") for name in app.blueprints), app.blueprints
    finally:
        app.extensions["scheduler_app"].store.db.dispose()


def test_routes_live_under_the_prefix_and_the_host_keeps_its_own(make_host) -> None:
    app = make_host(start=False)
    client = app.test_client()
    assert client.get("/").get_data(as_text=True) == "host index 1"
    assert client.get("/").get_data(as_text=True) == "host index 2"  # the host's session
    assert client.get("/api/tasks").json == {"host": "not here"}  # the host's 404
    assert client.get("/healthz").json == {"host": "not here"}
    tasks = client.get("/scheduler-app/api/tasks")
    assert tasks.status_code == 200
    assert "tests.test_extension.add" in {t["name"] for t in tasks.json["items"]}
    assert client.get("/scheduler-app/healthz").json == {"status": "ok"}
    page = client.get("/scheduler-app/", headers={"Accept": "text/html"})
    assert page.status_code == 200 and b"scheduler-app/api" not in page.data[:0]
    assert b'data-root="/scheduler-app"' in page.data
    assert client.get("/scheduler-app/api/runs/999").json["error"]["code"] == "not_found"
    # Flask-APScheduler's API only when asked for, at its own prefix.
    assert client.get("/scheduler/jobs").status_code == 404


def test_another_prefix_and_flask_apschedulers_api(make_host) -> None:
    app = make_host(SCHEDULER_URL_PREFIX="/ops/background",
                    SCHEDULER_API_ENABLED=True, SCHEDULER_API_PREFIX="/aps")
    client = app.test_client()
    assert client.get("/ops/background/api/tasks").status_code == 200
    assert client.get("/scheduler-app/api/tasks").status_code == 404
    jobs = client.get("/aps/jobs")
    assert jobs.status_code == 200
    assert "extension-tests-tick" in {job["id"] for job in jobs.json}


def test_tables_carry_a_prefix_of_their_own(make_host, db_url: str) -> None:
    engine = sa.create_engine(db_url)
    with engine.begin() as conn:  # the host's own tables of the same names, made first
        conn.exec_driver_sql("CREATE TABLE jobs (id INTEGER PRIMARY KEY, title TEXT)")
        conn.exec_driver_sql("CREATE TABLE runs (id INTEGER PRIMARY KEY, km REAL)")
        conn.exec_driver_sql("INSERT INTO runs (km) VALUES (10.5)")
    make_host(start=False)
    names = set(sa.inspect(engine).get_table_names())
    ours = {n for n in names if n.startswith(TABLE_PREFIX)}
    assert {"scheduler_runs", "scheduler_jobs", "scheduler_nodes"} <= ours
    assert names - ours - {"scheduler_alembic_version"} == {"jobs", "runs"}
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT km FROM runs").scalar_one() == 10.5
    engine.dispose()


def test_init_app_twice_and_bad_settings(make_host, db_url: str) -> None:
    app = make_host(start=False)
    with pytest.raises(RuntimeError, match="already has"):
        Scheduler().init_app(app)
    with pytest.raises(ConfigError, match="SCHEDULER_WORKER_THREADS"):
        Scheduler(host_app(db_url, SCHEDULER_WORKER_THREADS="many"))
    with pytest.raises(ConfigError, match="SCHEDULER_URL_PREFIX"):
        Scheduler(host_app(db_url, SCHEDULER_URL_PREFIX="no-slash"))
    assert APScheduler is Scheduler


# -- tasks and runs from Python -----------------------------------------------------------------

def test_enqueue_runs_in_the_host_app_context(make_host) -> None:
    app = make_host()
    seen_in_task.clear()
    with app.app_context():
        run = add.enqueue(a=2, b=3)
        assert isinstance(run, RunHandle) and run.task == "tests.test_extension.add"
        assert run.wait(timeout=10) is run
    assert (run.state, run.result, run.error) == ("succeeded", 5, None)
    assert run.progress == {"done": 1.0, "total": 1.0, "percent": 100.0, "message": "added"}
    assert seen_in_task == {"app": "host_for_tests", "marker": "the host"}
    assert double(4) == 8  # still a plain function


def test_a_task_with_a_context_and_a_failing_one(make_host) -> None:
    app = make_host()
    with app.app_context():
        done = report.enqueue(steps=3).wait(timeout=10)
        failed = fails.enqueue(message="no luck").wait(timeout=10)
        same = scheduler.get_run(failed.id)
    assert done.result == {"steps": 3, "attempt": 1}
    assert failed.state == "failed"
    assert failed.error is not None and failed.error["type"] == "RuntimeError"
    assert failed.error["message"] == "no luck" and "Traceback" in failed.error["traceback"]
    assert same.id == failed.id and same.state == "failed"


def test_bad_arguments_name_every_field_and_store_nothing(make_host) -> None:
    app = make_host(start=False)
    with app.app_context():
        with pytest.raises(ValueError) as error:
            add.enqueue(a="two", c=1)
        assert "kwargs.a" in str(error.value) and "kwargs.c" in str(error.value)
        with pytest.raises(ValueError, match="run_after"):
            add.using(run_after=datetime(2030, 1, 1)).enqueue(a=1)  # naive
        with pytest.raises(LookupError):
            scheduler.get_run(424242)
        svc = scheduler.services()
        assert svc.store.runs.find(limit=10) == []


def test_run_after_queues_for_later_and_cancel(make_host) -> None:
    app = make_host()
    with app.app_context():
        later = add.using(run_after=timedelta(minutes=5)).enqueue(a=1)
        at = datetime.now(UTC) + timedelta(hours=1)
        much_later = add.using(run_after=at).enqueue(a=1)
    assert later.state == "queued" and much_later.state == "queued"
    scheduled = later.as_dict()["scheduled_for"]
    assert datetime.fromisoformat(scheduled) > datetime.now(UTC) + timedelta(minutes=4)
    assert later.cancel().state == "cancelled"
    assert later.cancel().state == "cancelled"  # again: already finished, left as it was
    with pytest.raises(TimeoutError):
        much_later.wait(timeout=0.05)


def test_enqueue_inside_the_hosts_transaction(make_host, db_url: str) -> None:
    app = make_host()
    engine = sa.create_engine(db_url)
    with app.app_context():
        with Session(engine) as db_session:
            add.using(session=db_session).enqueue(a=10)
            db_session.rollback()
        with Session(engine) as db_session:
            kept = add.using(session=db_session).enqueue(a=20)
            assert scheduler.services().store.runs.get(kept.id) is None  # not yet committed
            db_session.commit()
        assert kept.wait(timeout=10).result == 21
        # Only add's runs: the host's interval job ("extension-tests-tick", every second) may
        # fire meanwhile on a slow machine (and take the id SQLite gives the rolled-back insert
        # again), so the ids say nothing; add's runs hold only the committed one.
        runs = scheduler.services().store.runs.find(task=kept.task, limit=10)
        assert [r.kwargs for r in runs] == [{"a": 20}]
        other = sa.create_engine(db_url.replace("scheduler.sqlite3", "other.sqlite3"))
        with Session(other) as db_session, pytest.raises(ValueError, match="another database"):
            add.using(session=db_session).enqueue(a=1)
        other.dispose()
    engine.dispose()


# -- jobs from Python ---------------------------------------------------------------------------

def test_a_task_decorated_with_a_trigger_is_a_job_that_fires(make_host) -> None:
    app = make_host()
    with app.app_context():
        job = scheduler.get_job("extension-tests-tick")
        assert job is not None and job["task"] == "tests.test_extension.tick"
        assert job["trigger"]["type"] == "interval" and job["trigger"]["seconds"] == 1
        svc = scheduler.services()
        fired = wait_for(lambda: [r for r in svc.store.runs.find(job_id=job["id"], limit=5)
                                  if r.state.value == "succeeded"], timeout=10)
        assert fired[0].result == "tick"


def test_jobs_with_flask_apschedulers_method_names(make_host) -> None:
    app = make_host()
    with app.app_context():
        job = scheduler.add_job("nightly", add, trigger="cron", hour=2, kwargs={"a": 1})
        assert job["id"] == "nightly" and str(job["trigger"]["hour"]) == "2"
        assert scheduler.add_job("by-name", "extension_tests.report", trigger="interval",
                                 minutes=5, kwargs={"steps": 2})["task"] == \
            "extension_tests.report"
        assert {"nightly", "by-name"} <= {j["id"] for j in scheduler.get_jobs()}
        changed = scheduler.modify_job("nightly", trigger="cron", hour=3)
        assert str(changed["trigger"]["hour"]) == "3"
        assert scheduler.pause_job("nightly")["paused"] is True
        assert scheduler.resume_job("nightly")["paused"] is False
        run = scheduler.run_job("nightly")
        assert run.wait(timeout=10).result == 2
        assert scheduler.get_job("nightly")["next_run_time"] is not None  # schedule unchanged
        scheduler.remove_job("nightly")
        assert scheduler.get_job("nightly") is None
        with pytest.raises(LookupError):
            scheduler.pause_job("nightly")


def test_a_bad_job_names_every_field_and_stores_nothing(make_host) -> None:
    app = make_host(start=False)
    with app.app_context():
        with pytest.raises(ValueError) as error:
            scheduler.add_job("bad", add, trigger="cron", minute="99", kwargs={"a": "x"})
        message = str(error.value)
        assert "minute" in message and "kwargs.a" in message
        with pytest.raises(ValueError, match="func"):
            scheduler.add_job("worse", print, trigger="interval", seconds=5)
        assert scheduler.get_job("bad") is None and scheduler.get_job("worse") is None


def test_start_is_idempotent_and_shutdown_stops(make_host) -> None:
    app = make_host(start=False)
    with app.app_context():
        assert scheduler.running is False
        scheduler.start()
        scheduler.start()
        assert scheduler.running is True
        scheduler.shutdown()
        assert scheduler.running is False


# -- who may act --------------------------------------------------------------------------------

def test_the_hosts_role_loader(make_host) -> None:
    own = Scheduler()
    app = make_host(start=False, extension=own, SCHEDULER_API_TOKENS={"tok": "admin"})
    roles: dict[str, str | None] = {"role": None}

    @own.role_loader
    def load_role() -> str | None:
        return roles["role"]

    client = app.test_client()
    url = "/scheduler-app/api/runs"
    body = {"task": "tests.test_extension.add", "kwargs": {"a": 1}}
    assert client.get(url).status_code == 401  # no loader role: the token rule applies
    assert client.get(url, headers={"Authorization": "Bearer tok"}).status_code == 200
    roles["role"] = "viewer"
    assert client.get(url).status_code == 200
    assert client.post(url, json=body).status_code == 403
    roles["role"] = "admin"
    assert client.post(url, json=body).status_code == 202  # no CSRF token needed
    refused = client.post(url, json=body, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and refused.json["error"]["code"] == "csrf_failed"
    roles["role"] = "root"
    assert client.get(url).status_code == 500
