"""The command line goes through the same validation and store as the HTTP API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from scheduler_app.services import services
from tests.conftest import wait_for

ROOT = Path(__file__).resolve().parent.parent
FLASK = str(Path(sys.executable).with_name("flask"))


def cli(app, *args):
    return app.test_cli_runner().invoke(args=list(args))


def test_tasks_list_and_show(app):
    result = cli(app, "tasks", "list")
    assert result.exit_code == 0
    assert "demo.sleep" in result.output and "seconds, steps" in result.output
    shown = json.loads(cli(app, "tasks", "show", "demo.sleep").output)
    assert shown["parameters"]["required"] == ["seconds"]


def test_tasks_run_wait_reports_success_and_failure_by_exit_code(app):
    ok = cli(app, "tasks", "run", "demo.sleep", "--kwargs", '{"seconds": 0.2, "steps": 2}',
             "--wait")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout[ok.stdout.index("{"):])["result"] == {"slept": 0.2}
    bad = cli(app, "tasks", "run", "demo.fail", "--wait")
    assert bad.exit_code == 1


def test_invalid_input_is_an_error_and_stores_nothing(app):
    result = cli(app, "tasks", "run", "demo.sleep", "--kwargs", '{"seconds": "x"}')
    assert result.exit_code != 0
    assert "kwargs.seconds" in result.output
    assert cli(app, "tasks", "run", "os.system", "--kwargs", '{"command": "id"}').exit_code != 0
    assert cli(app, "tasks", "run", "demo.echo", "--kwargs", "{nope").exit_code != 0
    bad_cron = cli(app, "jobs", "add", "demo.echo", "--kwargs", '{"value": 1}', "--cron",
                   "99 * * * *")
    assert bad_cron.exit_code != 0 and "trigger.minute: 99 is out of range 0-59" in bad_cron.output
    store = services(app).store
    assert store.runs.find() == []
    assert [j.id for j in store.jobs.all()] == ["maintenance.prune_runs"]


def test_jobs_commands_round_trip(app):
    added = cli(app, "jobs", "add", "demo.echo", "--id", "e", "--kwargs", '{"value": 3}',
                "--cron", "0 9 * * 1")
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["trigger"]["description"] == "At 09:00, only on Monday"
    listing = cli(app, "jobs", "list").output
    assert "e " in listing and "At 09:00, only on Monday" in listing
    assert cli(app, "jobs", "pause", "e").exit_code == 0
    assert json.loads(cli(app, "jobs", "show", "e").output)["paused"] is True
    assert cli(app, "jobs", "resume", "e").exit_code == 0
    run = json.loads(cli(app, "jobs", "run", "e").output)
    assert run["job_id"] == "e"
    wait_for(lambda: services(app).store.runs.get(run["id"]).state.value == "succeeded")
    assert cli(app, "jobs", "remove", "e").exit_code == 0
    assert cli(app, "jobs", "show", "e").exit_code != 0


def test_runs_commands(app):
    run = json.loads(cli(app, "tasks", "run", "testing.logs", "--kwargs", '{"lines": 2}').output)
    wait_for(lambda: services(app).store.runs.get(run["id"]).state.value == "succeeded")
    assert str(run["id"]) in cli(app, "runs", "list").output
    logs = cli(app, "runs", "logs", str(run["id"]), "--follow")
    assert logs.exit_code == 0
    assert "ctx line 0" in logs.output and "from a library logger" in logs.output
    assert json.loads(cli(app, "runs", "show", str(run["id"])).output)["result"] == 2
    finished = cli(app, "runs", "cancel", str(run["id"]))
    assert finished.exit_code != 0 and "already finished" in finished.output


def test_worker_command_runs_jobs_and_stops_gracefully(tmp_path):
    env = {**os.environ, "FLASK_DATABASE_URL": f"sqlite:///{tmp_path / 'w.sqlite3'}",
           "FLASK_DISPATCH_POLL_SECONDS": "0.2", "PYTHONPATH": str(ROOT)}
    queued = subprocess.run([FLASK, "--app", "wsgi", "tasks", "run", "demo.echo",
                             "--kwargs", '{"value": "from cli"}'], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=60, check=True)
    run_id = json.loads(queued.stdout)["id"]
    worker = subprocess.Popen([FLASK, "--app", "wsgi", "scheduler", "worker"], cwd=ROOT,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
    try:
        def succeeded():
            shown = subprocess.run([FLASK, "--app", "wsgi", "runs", "show", str(run_id)],
                                   cwd=ROOT, env=env, capture_output=True, text=True,
                                   timeout=60)
            return shown.returncode == 0 and json.loads(shown.stdout)["state"] == "succeeded"
        wait_for(succeeded, timeout=30, interval=0.3)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    nodes = subprocess.run([FLASK, "--app", "wsgi", "scheduler", "nodes"], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=60).stdout
    # A worker stopped with SIGTERM exited cleanly: "stopped", not "lost" (nor "alive").
    assert "worker" in nodes and "stopped" in nodes and "alive" not in nodes \
        and "lost" not in nodes


def test_nodes_are_alive_stopped_or_lost_in_the_cli_and_the_dashboard(app):
    """One vocabulary: alive, stopped (exited cleanly), lost (silent past its lease)."""
    from datetime import UTC, datetime, timedelta

    from scheduler_app.store.schema import nodes

    store = services(app).store
    store.nodes.register("test:1:stopped", "test", 1, "all", 4)
    store.nodes.mark_stopped("test:1:stopped")
    store.nodes.register("test:2:silent", "test", 2, "worker", 4)
    with store.db.write() as conn:
        conn.execute(nodes.update().where(nodes.c.id == "test:2:silent").values(
            heartbeat_at=datetime.now(UTC) - timedelta(hours=1)))
    listed = {line.split()[0]: line.split()[2]
              for line in cli(app, "scheduler", "nodes").output.splitlines()[1:]}
    assert listed["test:1:stopped"] == "stopped" and listed["test:2:silent"] == "lost"
    assert "alive" in listed.values() and "dead" not in listed.values()
    card = app.test_client().get("/", headers={"Accept": "text/html",
                                                     "X-Dashboard-Fragment": "1"}).text
    assert "1 stopped" in card and "1 lost" in card and " dead" not in card
