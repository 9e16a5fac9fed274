"""Flask debug mode, with and without the reloader: each fire runs once, on one node.

``flask run --debug`` runs two processes: the reloader's watcher, which imports the app but
serves nothing, and the serving process it restarts on every code change. Only the serving
process may hold a scheduler (it starts one with its first request), and each one it leaves
behind on a reload or Ctrl-C must stop like any node: marked stopped, its runs handed back.
Under gunicorn, ``FLASK_DEBUG=1`` must not stop the worker's scheduler from starting
(Flask-APScheduler's own ``start()`` silently does nothing in that case).

The reloader is told to ignore the repository's files (``--exclude-patterns``) so that a
source file saved while the tests run does not restart the server mid-test; the reload test
triggers reloads through a file of its own instead.
"""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import wait_for
from tests.servers import REPO, Server, Servers

IGNORE_SOURCES = ("--exclude-patterns", f"{REPO}/*")


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    with Servers(tmp_path) as factory:
        yield factory


def add_echo_job(server: Server, seconds: float = 1) -> str:
    response = server.post("/api/jobs", json={
        "task": "demo.echo", "kwargs": {"value": 1},
        "trigger": {"type": "interval", "seconds": seconds}})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def job_runs(server: Server, job_id: str) -> list[dict[str, Any]]:
    return server.get_json(f"/api/runs?job_id={job_id}&limit=500")["items"]  # type: ignore[no-any-return]


def wait_for_runs(server: Server, job_id: str, count: int) -> list[dict[str, Any]]:
    """At least ``count`` runs of the job, every one of them finished."""
    def finished() -> list[dict[str, Any]] | None:
        runs = job_runs(server, job_id)
        if len(runs) >= count and all(run["state"] == "succeeded" for run in runs):
            return runs
        return None
    return server.wait_for(finished, timeout=15, interval=0.2,  # type: ignore[no-any-return]
                           message=f"{count} finished runs of job {job_id}")


def assert_each_fire_ran_once(runs: list[dict[str, Any]], interval: float,
                              elapsed: float) -> None:
    """One run per scheduled fire time, fire times on the job's grid, no more runs than fires
    could have happened in ``elapsed`` seconds."""
    per_fire = Counter(run["scheduled_for"] for run in runs)
    assert all(count == 1 for count in per_fire.values()), per_fire
    times = sorted(datetime.fromisoformat(t) for t in per_fire)
    gaps = [(b - a).total_seconds() / interval for a, b in zip(times, times[1:], strict=False)]
    assert all(gap >= 0.999 and abs(gap - round(gap)) < 0.01 for gap in gaps), gaps
    assert len(runs) <= elapsed / interval + 1, (len(runs), elapsed)


def live_nodes(server: Server) -> list[dict[str, Any]]:
    return [n for n in server.get_json("/api/nodes")["items"] if n["stopped_at"] is None]


def test_debug_reloader_fires_each_job_once_on_one_node(servers: Servers) -> None:
    server = servers.flask_run(extra_args=IGNORE_SOURCES)
    assert server.get_json("/healthz") == {"status": "ok"}
    server.get_json("/api/nodes")
    server.wait_ready(timeout=5)  # the first request started the serving process's node

    created = time.monotonic()
    job_id = add_echo_job(server)
    runs = wait_for_runs(server, job_id, 4)
    elapsed = time.monotonic() - created

    assert_each_fire_ran_once(runs, 1, elapsed)
    nodes = server.get_json("/api/nodes")["items"]
    assert len(nodes) == 1 and nodes[0]["stopped_at"] is None, nodes
    # The node is the serving process, not the watcher that imported the app too.
    assert nodes[0]["pid"] != server.pid
    assert "Restarting with" in server.log_path.read_text(), "the reloader was not on"
    assert all(run["node"] == nodes[0]["id"] for run in runs)


def test_reload_stops_the_old_node_and_the_new_one_takes_over(
        servers: Servers, tmp_path: Path) -> None:
    """A reload while a 30 s task runs: the old serving process does not wait for the task (the
    limits below are shorter), marks its node stopped and hands the run back; the new process
    (which starts its node with its first request: the polls here) runs it, same attempt."""
    trigger = tmp_path / "reload-trigger.txt"
    trigger.write_text("0")
    server = servers.flask_run(extra_args=[*IGNORE_SOURCES, "--extra-files", str(trigger)])
    run = server.post("/api/runs", json={"task": "demo.sleep",
                                         "kwargs": {"seconds": 30, "steps": 300}}).json()
    server.wait_run(run["id"], "running", timeout=10)
    old = live_nodes(server)
    assert len(old) == 1, old

    # The stat reloader compares modification times; make sure this one is newer.
    stamp = time.time() + 2
    trigger.write_text("1")
    os.utime(trigger, (stamp, stamp))

    def old_node_stopped() -> list[dict[str, Any]] | None:
        nodes = server.get_json("/api/nodes")["items"]  # also starts the new node
        stopped = [n for n in nodes if n["id"] == old[0]["id"] and n["stopped_at"]]
        return nodes if stopped else None

    server.wait_for(lambda: server.answers("/healthz") and old_node_stopped(), timeout=15,
                    interval=0.2, message="the old serving process's node to be stopped")

    def taken_over() -> dict[str, Any] | None:
        nodes = live_nodes(server)
        current = server.run(run["id"])
        if len(nodes) == 1 and current["node"] == nodes[0]["id"]:
            return current
        return None

    resumed = server.wait_for(taken_over, timeout=10, interval=0.2,
                              message="the new node to run the handed-back run")
    assert resumed["state"] == "running"
    assert resumed["attempt"] == 1, "a reload must not spend an attempt"
    assert resumed["error"] is None


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_stopping_the_serving_process_hands_running_runs_back(
        servers: Servers, sig: signal.Signals) -> None:
    """Ctrl-C (or SIGTERM) in the serving process stops its node gracefully.

    The signal goes to the serving process only: with a whole-group Ctrl-C the reloader's
    watcher SIGKILLs its child 0.25 s later (``subprocess.call``), and at once on SIGTERM, so
    there the graceful stop is a race that no code in the app can win for slow tasks.
    """
    server = servers.flask_run(extra_args=IGNORE_SOURCES)
    run = server.post("/api/runs", json={"task": "demo.sleep",
                                         "kwargs": {"seconds": 30, "steps": 300}}).json()
    node_id = server.wait_run(run["id"], "running", timeout=10)["node"]
    serving_pid = int(node_id.split(":")[1])
    assert serving_pid != server.pid

    os.kill(serving_pid, sig)
    assert server.wait_exit(timeout=15) == 0  # the watcher exits with its child

    def settled() -> tuple[Any, ...] | None:
        row = server.db_rows("SELECT state, attempt, node FROM scheduler_runs WHERE id = ?",
                             (run["id"],))[0]
        node = server.db_rows("SELECT stopped_at FROM scheduler_nodes WHERE id = ?", (node_id,))[0]
        return tuple(row) if node["stopped_at"] is not None else None

    assert wait_for(settled, timeout=10, message="the node to be marked stopped") == (
        "queued", 1, None)


def test_flask_debug_under_gunicorn_starts_one_scheduler(servers: Servers) -> None:
    server = servers.gunicorn({"FLASK_DEBUG": "1"})
    server.wait_ready(timeout=10)
    created = time.monotonic()
    job_id = add_echo_job(server)
    runs = wait_for_runs(server, job_id, 3)
    elapsed = time.monotonic() - created
    assert_each_fire_ran_once(runs, 1, elapsed)
    nodes = live_nodes(server)
    assert len(nodes) == 1, nodes
    assert nodes[0]["pid"] != server.pid
