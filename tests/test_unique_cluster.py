"""Unique runs across real processes: 1,000 concurrent enqueues of one key from three hosts on
PostgreSQL and from four gunicorn workers on one SQLite file leave exactly one active run, and
every other caller is told which; after ``kill -9`` of the node running it, the key frees once
the run is settled NodeLost."""

from __future__ import annotations

import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from itertools import cycle

import pytest

from scheduler_app.store import ACTIVE_STATES
from tests.servers import Server, Servers
from tests.test_cluster import FAST, _node_pid, _worker_pids, all_runs, open_store, pg_hosts

ENQUEUES = 1000
BODY = {"task": "demo.sleep", "kwargs": {"seconds": 60, "steps": 60}, "unique_key": "one"}


@pytest.fixture
def servers(tmp_path):
    with Servers(tmp_path) as group:
        yield group


def enqueue_concurrently(targets: list[Server]) -> list[tuple[int, dict]]:
    pick = cycle(targets)
    with ThreadPoolExecutor(24) as pool:
        responses = list(pool.map(lambda server: server.post("/api/runs", json=BODY),
                                  [next(pick) for _ in range(ENQUEUES)]))
    return [(r.status_code, r.json()) for r in responses]


def assert_one_run_and_every_other_caller_told_which(answers: list[tuple[int, dict]],
                                                      store) -> int:
    statuses = Counter(status for status, _ in answers)
    assert statuses == {202: 1, 409: ENQUEUES - 1}, statuses
    [winner] = [body["id"] for status, body in answers if status == 202]
    refused = [body["error"] for status, body in answers if status == 409]
    assert {e["code"] for e in refused} == {"already_queued"}
    assert Counter(e["details"]["run_id"] for e in refused) == {winner: ENQUEUES - 1}
    active = [r for r in all_runs(store) if r.unique_key == "one" and r.state in ACTIVE_STATES]
    assert [r.id for r in active] == [winner]
    assert len(all_runs(store)) == 1
    assert store.stats.snapshot(3).deduplicated == {"demo.sleep": ENQUEUES - 1}
    return winner


def test_one_run_from_1000_enqueues_on_three_postgresql_hosts(pg_url, servers):
    hosts = pg_hosts(servers, pg_url)
    store = open_store(pg_url)
    winner = assert_one_run_and_every_other_caller_told_which(enqueue_concurrently(hosts),
                                                               store)
    assert hosts[0].post(f"/api/runs/{winner}/cancel").status_code == 202


def test_one_run_from_1000_enqueues_on_four_gunicorn_workers_on_sqlite(servers):
    server = servers.gunicorn({**FAST, "GUNICORN_WORKERS": "4"})
    server.wait_for(lambda: sum(n["alive"] for n in server.get_json("/api/nodes")["items"]) == 4,
                    message="four live nodes")
    store = open_store(f"sqlite:///{servers.db_path}")
    winner = assert_one_run_and_every_other_caller_told_which(enqueue_concurrently([server]),
                                                               store)
    assert server.post(f"/api/runs/{winner}/cancel").status_code == 202


def test_the_key_frees_when_the_killed_nodes_run_is_settled_node_lost(pg_url, servers):
    hosts = pg_hosts(servers, pg_url, count=2)
    first = hosts[0].post("/api/runs", json=BODY)
    assert first.status_code == 202, first.text
    running = hosts[0].wait_run(first.json()["id"], "running")
    victim = next(h for h in hosts if _node_pid(running) in _worker_pids(h))
    survivor = next(h for h in hosts if h is not victim)
    held = survivor.post("/api/runs", json=BODY)
    assert held.status_code == 409 and held.json()["error"]["details"]["run_id"] == running["id"]
    victim.signal_group(signal.SIGKILL)
    victim.wait_exit()
    settled = survivor.wait_run(running["id"], "failed", timeout=3 + 10)
    assert settled["error"]["type"] == "NodeLost"
    again = survivor.post("/api/runs", json=BODY)
    assert again.status_code == 202, again.text
    assert again.json()["id"] != running["id"]
    assert survivor.post(f"/api/runs/{again.json()['id']}/cancel").status_code == 202
