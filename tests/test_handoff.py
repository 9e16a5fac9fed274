"""Hand-offs between real processes: a web node (gunicorn, ``SCHEDULER_ROLE=web``) takes
``POST /api/runs`` and a worker (``flask scheduler worker``) executes it. The poll and the tick
are set to 5 s, so only a wake-up explains a run that starts, or a cancel that lands, within a
fraction of a second. With wake-ups off (``WAKEUPS=false``) the poll still hands work over.
"""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from tests.servers import BIN, REPO, Server, Servers, server_env

SLOW_POLL = {"DISPATCH_POLL_SECONDS": 5, "TICK_SECONDS": 5, "NODE_HEARTBEAT_SECONDS": 5,
             "NODE_LEASE_SECONDS": 30, "PRUNE_RUNS_CRON": ""}
# Far under the 5 s poll, yet loose enough for a loaded 2-core machine.
FAST = 0.5


class Worker:
    """``flask --app wsgi scheduler worker`` on the test's database, stopped at the end."""

    def __init__(self, servers: Servers, settings: dict[str, Any]) -> None:
        self.log_path = servers.tmp_path / f"worker-{time.monotonic_ns()}.log"
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [str(BIN / "flask"), "--app", "wsgi", "scheduler", "worker"], cwd=REPO,
                env=server_env(servers.db_path, settings), stdout=out,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        print(f"----- worker output -----\n{self.log_path.read_text(errors='replace')[-4000:]}")


@pytest.fixture
def split(tmp_path: Any) -> Iterator[Any]:
    """``split(**settings)``: a web node and a worker node on one database, both ready;
    ``split.worker(**settings)`` starts another worker."""
    workers: list[Worker] = []
    with Servers(tmp_path) as servers:
        def add_worker(**settings: Any) -> Worker:
            worker = Worker(servers, {**SLOW_POLL, **settings})
            workers.append(worker)
            return worker

        def start(**settings: Any) -> tuple[Server, Worker]:
            web = servers.gunicorn({**SLOW_POLL, **settings, "SCHEDULER_ROLE": "web"})
            worker = add_worker(**settings)
            web.wait_for(lambda: worker_alive(web), timeout=30,
                         message="the worker node to register")
            return web, worker
        start.worker = add_worker  # type: ignore[attr-defined]
        try:
            yield start
        finally:
            for worker in workers:
                worker.stop()


def worker_alive(web: Server) -> bool:
    return any(n["role"] == "worker" and n["alive"] for n in web.get_json("/api/nodes")["items"])


def start_delays(web: Server, count: int) -> list[float]:
    """Seconds from each run's creation to its start on the worker, runs sent one at a time
    (each after the last finished, so the worker's dispatcher is asleep on its 5 s poll)."""
    delays = []
    for i in range(count):
        response = web.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": i}})
        assert response.status_code == 202, response.text
        run = web.wait_run(response.json()["id"], "succeeded", timeout=20)
        delays.append(stamp(run["started_at"]) - stamp(run["created_at"]))
    return delays


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def cancel_delay(web: Server) -> float:
    """Seconds from a cancel sent to the web node to the run, executing on the worker, ending
    cancelled."""
    response = web.post("/api/runs", json={"task": "demo.sleep", "kwargs": {"seconds": 60}})
    run_id = response.json()["id"]
    web.wait_run(run_id, "running", timeout=20)
    sent = time.monotonic()
    assert web.post(f"/api/runs/{run_id}/cancel").status_code == 202
    web.wait_run(run_id, "cancelled", timeout=20)
    return time.monotonic() - sent


def test_sqlite_a_run_posted_to_the_web_node_starts_on_the_worker_at_once(split):
    web, _ = split()
    delays = start_delays(web, 5)
    assert max(delays) < FAST, delays


def test_sqlite_a_cancel_reaches_the_worker_at_once(split):
    web, _ = split()
    assert cancel_delay(web) < FAST + 0.5


def test_sqlite_with_wakeups_off_the_poll_still_hands_work_over(split):
    web, _ = split(WAKEUPS=False, DISPATCH_POLL_SECONDS=1)
    delays = start_delays(web, 3)
    assert max(delays) < 3, delays
    # Waiting for the poll, not woken: a wake-up would start each run within milliseconds.
    assert max(delays) > 0.05, delays


def test_postgresql_a_run_posted_to_the_web_node_starts_on_the_worker_at_once(pg_url, split):
    web, _ = split(DATABASE_URL=pg_url)
    delays = start_delays(web, 5)
    assert max(delays) < FAST, delays
    assert cancel_delay(web) < FAST + 0.5


def test_postgresql_with_wakeups_off_the_poll_still_hands_work_over(pg_url, split):
    web, _ = split(DATABASE_URL=pg_url, WAKEUPS=False, DISPATCH_POLL_SECONDS=1)
    delays = start_delays(web, 3)
    assert max(delays) < 3, delays
    assert max(delays) > 0.05, delays


def test_postgresql_a_dropped_listener_reconnects_and_the_node_stays_up(pg_url, split):
    web, worker = split(DATABASE_URL=pg_url)
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")
    listening = sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                        "AND query LIKE 'LISTEN%'")
    try:
        def listeners() -> set[int]:
            with admin.connect() as conn:
                return {row.pid for row in conn.execute(listening)}
        before = web.wait_for(listeners, message="the worker's LISTEN connection")
        with admin.connect() as conn:
            for pid in before:
                conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})

        web.wait_for(lambda: listeners() - before, timeout=20, message="the listener to reconnect")
    finally:
        admin.dispose()
    assert worker.proc.poll() is None
    assert max(start_delays(web, 3)) < FAST
    assert "reconnecting" in worker.log_path.read_text()


def test_run_split_starts_web_and_worker_nodes_and_stops_them_together(tmp_path):
    """``make run-split`` (``split.py``): one command, a web node and a worker node; runs go to
    the worker at once; SIGTERM stops both gracefully."""
    with Servers(tmp_path) as servers:
        split_server = servers.start(
            "run-split", lambda port: [str(BIN / "python"), "split.py", "--bind",
                                       f"127.0.0.1:{port}"], SLOW_POLL)
        split_server.wait_for(lambda: worker_alive(split_server), timeout=30,
                              message="the worker node to register")
        nodes = split_server.get_json("/api/nodes")["items"]
        assert sorted(n["role"] for n in nodes if n["alive"]) == ["web", "worker"]
        assert max(start_delays(split_server, 3)) < FAST
        split_server.signal(signal.SIGTERM)
        assert split_server.wait_exit(30) == 0
        alive = [n for n in split_server.db_rows("SELECT id FROM scheduler_nodes "
                                                 "WHERE stopped_at IS NULL")]
        assert alive == [], "a node did not stop gracefully"


def test_run_split_refuses_a_bad_worker_count():
    result = subprocess.run([str(BIN / "python"), "split.py"], cwd=REPO, capture_output=True,
                            text=True, env={**server_env(REPO / "unused.sqlite3"),
                                            "SPLIT_WORKERS": "none"}, timeout=30)
    assert result.returncode == 2
    assert "SPLIT_WORKERS must be a whole number" in result.stderr


def test_sqlite_a_killed_workers_socket_is_cleaned_up_and_a_new_worker_is_woken(split):
    web, worker = split()
    folder = Path(f"{web.db_path}.wakeups")
    web.wait_for(lambda: list(folder.glob("*.sock")), message="the worker's socket")
    (stale,) = folder.glob("*.sock")
    worker.proc.kill()  # no clean stop: its socket file stays behind
    worker.proc.wait(10)
    assert stale.exists()
    response = web.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": 1}})
    assert response.status_code == 202
    assert not stale.exists(), "the web node kept a dead node's socket"
    web.wait_for(lambda: web.run(response.json()["id"])["state"] == "queued",
                 message="the run to wait, queued")
    first = web.run(response.json()["id"])
    replacement = split.worker()
    web.wait_run(first["id"], "succeeded", timeout=20)  # the new worker's first look
    assert replacement.proc.poll() is None
    assert max(start_delays(web, 3)) < FAST  # and then the wake-ups reach it


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_named_run_is_taken_by_one_of_two_workers_at_once_and_runs_once(kind, split,
                                                                         tmp_path, request):
    """Each run posted to the web node is named in its wake-up; both idle workers hear it, one
    takes it by its id and the other skips it: every run starts within a fraction of the 5 s
    poll, on one of the two workers, and executes exactly once."""
    settings = {"DATABASE_URL": request.getfixturevalue("pg_url")} if kind == "postgresql" \
        else {}
    web, first = split(**settings)
    second = split.worker(**settings)
    web.wait_for(lambda: sum(n["role"] == "worker" and n["alive"] for n in
                             web.get_json("/api/nodes")["items"]) == 2,
                 timeout=30, message="both workers to register")
    executions = tmp_path / "executions.txt"
    ids, delays = [], []
    for _ in range(8):
        response = web.post("/api/runs", json={"task": "testing.tally",
                                               "kwargs": {"path": str(executions)}})
        assert response.status_code == 202, response.text
        run = web.wait_run(response.json()["id"], "succeeded", timeout=20)
        ids.append(run["id"])
        delays.append(stamp(run["started_at"]) - stamp(run["created_at"]))
    assert max(delays) < FAST, delays
    lines = executions.read_text().split()
    assert sorted(int(x) for x in lines[0::2]) == sorted(ids), "a run executed twice or never"
    assert {int(pid) for pid in lines[1::2]} <= {first.proc.pid, second.proc.pid}
