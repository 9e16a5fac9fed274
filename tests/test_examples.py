"""The examples, run the way their users would run them.

``examples/hostapp`` is an ordinary Flask + Flask-SQLAlchemy app with the scheduler added: in
process on SQLite and PostgreSQL, then under ``gunicorn -w 2`` with its own gunicorn.conf.py.
``examples/flask_apscheduler_quickstart`` is Flask-APScheduler's quick start with only its
import changed, under ``gunicorn -w 4``: its interval job must fire once per interval.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
import sqlalchemy as sa
from flask import Flask
from flask.json.provider import DefaultJSONProvider
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient
from flask_sqlalchemy.session import Session as FlaskSQLAlchemySession

from examples.hostapp import create_app, page_not_found
from examples.hostapp.extensions import db, scheduler
from examples.hostapp.models import Report
from examples.hostapp.tasks import build_report, purge_reports
from tests.conftest import wait_for
from tests.servers import BIN, REPO, Server, Servers, db_rows, server_env

BUILD = build_report.name
HOST_NOT_FOUND = {"error": "not found", "app": "hostapp"}
# Quicker than the defaults, so a test waits for its runs, not for the scheduler's timers.
FAST = {
    "SCHEDULER_DISPATCH_POLL_SECONDS": 0.2,
    "SCHEDULER_TICK_SECONDS": 0.05,
    "SCHEDULER_NODE_HEARTBEAT_SECONDS": 0.5,
    "SCHEDULER_NODE_LEASE_SECONDS": 3,
    "SCHEDULER_SHUTDOWN_GRACE_SECONDS": 1,
}
# Rows the host had before it added the scheduler, in tables of the names a scheduler uses.
HOST_JOBS = [(1, "Night-shift baker")]
HOST_RUNS = [(1, "North loop", 12), (2, "Harbour", 3)]
ROOT_LOG_LEVEL = logging.getLogger().level  # before any app was made


# -- the host app in process ----------------------------------------------------------------
@pytest.fixture
def host(any_db_url: str) -> Iterator[Flask]:
    """The example app on this test's database, which already holds the app's own tables
    (``reports``, ``jobs``, ``runs``) with rows: the scheduler is added to an existing app.
    Its scheduler is started and always stopped."""
    engine = sa.create_engine(any_db_url)
    try:
        db.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO jobs (id, title) VALUES (:id, :title)"),
                         [{"id": i, "title": t} for i, t in HOST_JOBS])
            conn.execute(sa.text("INSERT INTO runs (id, route, stops) VALUES (:i, :r, :s)"),
                         [{"i": i, "r": r, "s": s} for i, r, s in HOST_RUNS])
    finally:
        engine.dispose()

    app = create_app({"TESTING": True, "SECRET_KEY": "test",
                      "SQLALCHEMY_DATABASE_URI": any_db_url,
                      "SCHEDULER_DATABASE_URL": any_db_url, **FAST})
    try:
        with app.app_context():
            scheduler.start()
        yield app
    finally:
        scheduler.shutdown(app=app)
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()
        scheduler.services(app).store.db.dispose()


@pytest.fixture
def client(host: Flask) -> FlaskClient:
    return host.test_client()


def rows(app: Flask, sql: str, **params: Any) -> list[sa.Row[Any]]:
    """Rows read on a connection of their own, outside the app's session."""
    with app.app_context():
        with db.engine.connect() as conn:
            return list(conn.execute(sa.text(sql), params))


def post_report(client: FlaskClient, customer: str = "acme") -> dict[str, int]:
    response = client.post("/reports", json={"customer": customer, "rows": 500})
    assert response.status_code == 202, response.get_data(as_text=True)
    body: dict[str, int] = response.get_json()
    assert response.headers["Location"] == f"/reports/{body['report']}"
    return body


def wait_built(client: FlaskClient, report_id: int) -> dict[str, Any]:
    """The report once its run has ended. Read again after the run is seen ended: the view
    reads the report before the run, so the read that first shows the run ended may hold the
    report as it was a moment before the task's last commit."""
    def ended() -> bool:
        run = client.get(f"/reports/{report_id}").get_json()["run"]
        return run["state"] not in ("queued", "running")
    wait_for(ended, timeout=15, message=f"the build of report {report_id} to end")
    report: dict[str, Any] = client.get(f"/reports/{report_id}").get_json()
    return report


def test_a_report_is_built_by_its_run_through_the_hosts_db_session(
        host: Flask, client: FlaskClient) -> None:
    created = post_report(client)

    report = wait_built(client, created["report"])

    assert report["run"] == {"id": created["run"], "state": "succeeded", "progress": {
        "done": 500.0, "total": 500.0, "percent": 100.0, "message": "building rows"}}
    # Written by the task through db.session, which works only inside the host's app context.
    assert (report["status"], report["rows"], report["builds"]) == ("finished", 500, 1)
    assert report["finished_at"] is not None
    with host.app_context():
        run = scheduler.get_run(created["run"])
    assert (run.task, run.state, run.result, run.error) == (
        BUILD, "succeeded", {"report": created["report"], "rows": 500}, None)
    assert rows(host, "SELECT task, state, attempt FROM scheduler_runs") == [
        (BUILD, "succeeded", 1)]


def test_each_run_gets_a_session_that_is_removed_when_it_ends(
        host: Flask, client: FlaskClient) -> None:
    """Flask-SQLAlchemy removes the scoped session when the app context is torn down: a run
    whose context were kept (or never popped) would leave its session in the registry, open."""
    committed: list[tuple[str, FlaskSQLAlchemySession]] = []

    def record(session: FlaskSQLAlchemySession) -> None:
        committed.append((threading.current_thread().name, session))

    sa.event.listen(FlaskSQLAlchemySession, "after_commit", record)
    try:
        for customer in ("first", "second"):
            wait_built(client, post_report(client, customer)["report"])
    finally:
        sa.event.remove(FlaskSQLAlchemySession, "after_commit", record)

    in_runs = {session for thread, session in committed if thread != "MainThread"}
    assert len(in_runs) == 2, f"expected one session per run, got {committed}"
    with host.app_context():
        registered = list(db.session.registry.registry.values())
    for session in in_runs:
        assert session not in registered, "a run's session outlived its app context"
        assert not session.in_transaction()


def test_a_rolled_back_request_leaves_neither_run_nor_report(
        host: Flask, client: FlaskClient) -> None:
    response = client.post("/reports?fail=1", json={"customer": "doomed"})

    assert response.status_code == 500
    assert response.get_json() == {"error": "failed after queueing the build"}
    assert rows(host, "SELECT id FROM scheduler_runs") == []
    assert rows(host, "SELECT id FROM reports") == []
    # The app goes on as before: the next report is stored, queued and built.
    created = post_report(client, "next")
    assert wait_built(client, created["report"])["status"] == "finished"
    assert rows(host, "SELECT id FROM scheduler_runs") == [(created["run"],)]


def test_the_hosts_own_jobs_and_runs_tables_are_left_alone(host: Flask) -> None:
    with host.app_context():
        inspector = sa.inspect(db.engine)
        tables = set(inspector.get_table_names())
        columns = {t: [c["name"] for c in inspector.get_columns(t)] for t in ("jobs", "runs")}

    assert columns == {"jobs": ["id", "title"], "runs": ["id", "route", "stops"]}
    assert rows(host, "SELECT id, title FROM jobs") == HOST_JOBS
    assert rows(host, "SELECT id, route, stops FROM runs ORDER BY id") == HOST_RUNS
    extension_tables = tables - {"reports", "jobs", "runs"}
    assert {"scheduler_jobs", "scheduler_runs"} <= extension_tables
    assert all(t.startswith("scheduler_") for t in extension_tables), extension_tables


def test_the_dashboard_and_api_answer_under_the_prefix_only(client: FlaskClient) -> None:
    created = post_report(client)
    wait_built(client, created["report"])

    dashboard = client.get("/scheduler-app/", headers={"Accept": "text/html"})  # a browser
    assert dashboard.status_code == 200
    assert dashboard.mimetype == "text/html"
    runs = client.get("/scheduler-app/api/runs")
    assert runs.status_code == 200
    assert [(r["id"], r["task"], r["state"]) for r in runs.get_json()["items"]] == [
        (created["run"], BUILD, "succeeded")]
    # Nothing outside the prefix: these are the host's, and it has no such pages.
    for path in ("/api/runs", "/healthz", "/scheduler/jobs"):
        response = client.get(path)
        assert (response.status_code, response.get_json()) == (404, HOST_NOT_FOUND), path


def test_the_hosts_pages_errors_and_session_work_as_before(
        host: Flask, client: FlaskClient) -> None:
    assert client.get("/").get_json() == {"app": "hostapp", "reports": 0}
    missing = client.get("/no/such/page")
    assert (missing.status_code, missing.get_json()) == (404, HOST_NOT_FOUND)
    assert [client.get("/visits").get_json()["visits"] for _ in range(3)] == [1, 2, 3]
    assert client.get_cookie("session") is not None  # Flask's cookie name, the host's

    # Nothing global was changed: session interface, secret key, JSON, logging, error handlers.
    assert type(host.session_interface) is SecureCookieSessionInterface
    assert host.secret_key == "test"
    assert type(host.json) is DefaultJSONProvider and host.json.sort_keys is True
    assert logging.getLogger().level == ROOT_LOG_LEVEL
    app_wide = host.error_handler_spec[None]
    assert {code: list(handlers.values()) for code, handlers in app_wide.items()} == {
        404: [page_not_found]}


def test_start_outside_a_context_starts_the_app_the_factory_made_last(tmp_path: Path) -> None:
    """A host's test suite makes an app per test with the same extension object, and
    gunicorn's hook calls ``scheduler.start()`` with no app context. Flask-APScheduler's
    ``init_app`` makes the newest app the extension's; starting the first app instead (whose
    test is over) would leave the current one without a scheduler."""
    apps = [create_app({"SQLALCHEMY_DATABASE_URI": url, "SCHEDULER_DATABASE_URL": url, **FAST})
            for url in (f"sqlite:///{tmp_path / name}" for name in ("old.db", "new.db"))]
    default = scheduler.app  # what start() falls back to without a context
    try:
        scheduler.start()
        started = [scheduler.services(app).scheduler.started for app in apps]
    finally:
        for app in {*apps, default} - {None}:  # whichever app it started, stop it
            scheduler.shutdown(app=app)
            scheduler.services(app).store.db.dispose()
    assert started == [False, True], (
        "start() started the first app this extension was set up with: "
        + ("the older of the two" if default is apps[0] else "an earlier test's"))


def test_a_task_taking_ctx_runs_from_code_and_its_declared_job_exists(
        host: Flask, client: FlaskClient) -> None:
    wait_built(client, post_report(client)["report"])

    with host.app_context():
        job = scheduler.get_job("purge_reports")
        run = purge_reports.enqueue(older_than_days=0).wait(timeout=10)
        logs = client.get(f"/scheduler-app/api/runs/{run.id}/logs").get_json()

    assert job is not None
    assert (job["task"], job["trigger"]["type"]) == (purge_reports.name, "cron")
    assert (run.state, run.result) == ("succeeded", {"deleted": 1})
    assert any("deleted 1 report(s)" in line["message"] for line in logs["items"]), logs
    assert rows(host, "SELECT id FROM reports") == []


def test_in_eager_mode_the_hosts_own_tests_get_finished_runs(tmp_path: Path) -> None:
    """``SCHEDULER_EAGER``: what the host's test suite sets so that ``enqueue`` runs the task
    at once, with no scheduler started."""
    url = f"sqlite:///{tmp_path / 'eager.db'}"
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "SCHEDULER_DATABASE_URL": url,
                      "SCHEDULER_EAGER": True})
    try:
        with app.app_context():
            db.create_all()
            db.session.add(Report(customer="old", status="finished",
                                  finished_at=datetime.now(UTC) - timedelta(days=2)))
            db.session.commit()
            run = purge_reports.enqueue(older_than_days=1)
            assert (run.state, run.result) == ("succeeded", {"deleted": 1})
            assert scheduler.get_run(run.id).state == "succeeded"  # recorded
            assert db.session.scalars(sa.select(Report)).all() == []
    finally:
        with app.app_context():
            db.engine.dispose()
        scheduler.services(app).store.db.dispose()


# -- the host app under gunicorn ------------------------------------------------------------
def gunicorn_hostapp(port: int) -> list[str]:
    """The README's command, on this test's port, with the two workers said out loud."""
    return [str(BIN / "gunicorn"), "-c", "examples/hostapp/gunicorn.conf.py", "-w", "2",
            "--bind", f"127.0.0.1:{port}", "examples.hostapp.wsgi:app"]


def alive_nodes(server: Server) -> int:
    try:
        response = server.get("/scheduler-app/api/nodes", timeout=1.0)
    except requests.RequestException:  # not listening yet
        return 0
    if response.status_code != 200:
        return 0
    return sum(1 for node in response.json()["items"] if node["alive"])


def test_hostapp_under_gunicorn_builds_each_report_once(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    servers = Servers(tmp_path)
    monkeypatch.setenv("HOSTAPP_DATABASE_URL", f"sqlite:///{servers.db_path}")
    monkeypatch.setenv("SECRET_KEY", "shared-by-both-workers")
    init_db = subprocess.run([str(BIN / "flask"), "--app", "examples.hostapp", "init-db"],
                             cwd=REPO, env=server_env(servers.db_path), timeout=60,
                             capture_output=True, text=True)
    assert init_db.returncode == 0, init_db.stderr
    with servers:
        server = servers.start("hostapp", gunicorn_hostapp, wait=False)
        server.wait_for(lambda: alive_nodes(server) == 2, timeout=30,
                        message="both workers' schedulers to start")

        failed = server.post("/reports?fail=1", json={"customer": "doomed"})
        assert failed.status_code == 500, failed.text
        created = []
        for n in range(6):
            response = server.post("/reports", json={"customer": f"customer {n}"})
            assert response.status_code == 202, response.text
            created.append(response.json())

        def all_built() -> list[Any]:
            """The reports, once each is built and each run's outcome recorded (the task
            commits the report just before its run is marked succeeded)."""
            found = server.db_rows("SELECT id, status, builds FROM reports ORDER BY id")
            ongoing = server.db_rows("SELECT id FROM scheduler_runs "
                                     "WHERE state IN ('queued', 'running')")
            done = not ongoing and all(r["status"] == "finished" for r in found)
            return found if done else []
        reports = server.wait_for(all_built, timeout=30, message="every report to be built")

        assert [(r["id"], r["builds"]) for r in reports] == [(c["report"], 1) for c in created]
        runs = server.db_rows("SELECT id, task, kwargs, state, attempt FROM scheduler_runs "
                              "ORDER BY id")
        assert [(r["id"], r["task"], json.loads(r["kwargs"])["report_id"], r["state"],
                 r["attempt"]) for r in runs] == [
            (c["run"], BUILD, c["report"], "succeeded", 1) for c in created]

        assert server.get_json("/") == {"app": "hostapp", "reports": 6}
        missing = server.get("/api/runs")
        assert (missing.status_code, missing.json()) == (404, HOST_NOT_FOUND)
        first = server.get("/visits")
        again = server.get("/visits", cookies=first.cookies)
        assert (first.json(), again.json()) == ({"visits": 1}, {"visits": 2})
        dashboard = server.get("/scheduler-app/", headers={"Accept": "text/html"})
        assert dashboard.status_code == 200
        assert "text/html" in dashboard.headers["Content-Type"]
        listed = server.get_json("/scheduler-app/api/runs")["items"]
        assert sorted(r["id"] for r in listed) == [c["run"] for c in created]
    # Both workers started and stopped their schedulers (the config's hooks) without an error.
    assert "Traceback" not in server.log_path.read_text(), server.log_tail()


# -- Flask-APScheduler's quick start under gunicorn -----------------------------------------
QUICKSTART = REPO / "examples" / "flask_apscheduler_quickstart" / "app.py"


def test_flask_apscheduler_quickstart_fires_once_per_interval_under_four_workers(
        tmp_path: Path) -> None:
    # A copy whose interval is 1 s instead of 30 (too slow for a test): the only change.
    source = QUICKSTART.read_text()
    assert source.count("seconds=30") == 1
    app_dir = tmp_path / "quickstart"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(source.replace("seconds=30", "seconds=1"))
    db_path = app_dir / "instance" / "scheduler.sqlite3"  # the default: the instance folder

    def gunicorn(port: int) -> list[str]:
        return [str(BIN / "gunicorn"), "-w", "4", "--chdir", str(app_dir),
                "--bind", f"127.0.0.1:{port}", "app:app"]

    def fire_times() -> list[datetime]:
        if not db_path.exists():
            return []
        try:
            found = db_rows(db_path, "SELECT fire_time FROM scheduler_runs "
                                     "WHERE job_id = 'do_job_1' ORDER BY fire_time")
        except sqlite3.OperationalError:  # no table yet: the first worker is making it
            return []
        return [datetime.fromisoformat(r["fire_time"]) for r in found]

    with Servers(tmp_path) as servers:
        server = servers.start("quickstart", gunicorn, wait=False)
        server.wait_for(lambda: server.answers("/scheduler-app/healthz"), timeout=30,
                        message="the quick start to answer")
        # Flask-APScheduler's own API, switched on by the quick start's Config.
        jobs = server.get_json("/scheduler/jobs")
        assert [(j["id"], j["trigger"]) for j in jobs] == [("do_job_1", "interval")], jobs
        server.wait_for(lambda: len(fire_times()) >= 6, timeout=30,
                        message="six fires of do_job_1")
        server.stop()

    output = server.log_path.read_text()
    assert "Traceback" not in output, server.log_tail()
    fired = fire_times()
    assert_once_per_second(fired, at_least=6)
    # And each fire executed once: the job prints, so the output counts its executions.
    succeeded = db_rows(db_path, "SELECT count(*) FROM scheduler_runs "
                                 "WHERE job_id = 'do_job_1' AND state = 'succeeded'")[0][0]
    assert succeeded <= output.count("Job 1 executed") <= len(fired)


def assert_once_per_second(fired: list[datetime], at_least: int) -> None:
    """Each fire time once, every second from the first to the last, none missing."""
    shown = [f.isoformat() for f in fired]
    assert len(fired) >= at_least, shown
    assert len(set(fired)) == len(fired), f"a fire time was recorded twice: {shown}"
    gaps = [later - earlier for earlier, later in zip(fired, fired[1:], strict=False)]
    assert all(gap == timedelta(seconds=1) for gap in gaps), f"not 1 s apart: {shown}"


@pytest.mark.parametrize("offsets", [
    [0, 1, 2, 3, 3, 4, 5],  # one fire recorded twice
    [0, 1, 2, 3, 3.25, 4, 5],  # a second fire from a worker with a schedule of its own
    [0, 1, 2, 4, 5, 6],  # one fire missing
    [0, 1, 2],  # too few to tell
])
def test_the_quickstart_check_fails_on_one_duplicate_or_gap(offsets: list[float]) -> None:
    start = datetime(2026, 1, 1, 12, 0, 0)
    with pytest.raises(AssertionError):
        assert_once_per_second([start + timedelta(seconds=s) for s in offsets], at_least=6)
    assert_once_per_second([start + timedelta(seconds=s) for s in range(6)], at_least=6)
