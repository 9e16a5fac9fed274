"""Per-key concurrency: at most ``concurrency_limit`` running runs per concurrency key, held by
the claim in SQL across every node; the others wait in order and never hold up other keys. The
store on SQLite and PostgreSQL; then three real hosts on PostgreSQL, checked from the runs'
recorded start and finish times; then a key freed by ``kill -9`` of its node."""

from __future__ import annotations

import signal
from typing import Any

import pytest

from scheduler_app.store import RunState, Store
from tests.conftest import new_run
from tests.servers import Servers
from tests.test_cluster import _node_pid, _worker_pids, all_runs, max_overlap, open_store, pg_hosts


def keyed(key: str | None, limit: int | None = None, **more: Any) -> Any:
    return new_run(concurrency_key=key, concurrency_limit=limit if key else None, **more)


def test_a_key_at_its_limit_waits_in_order_without_holding_up_other_keys(store: Store) -> None:
    hot = [store.runs.create(keyed("tenant:hot", 2, kwargs={"value": i})).id for i in range(6)]
    other = store.runs.create(keyed("tenant:b", 1)).id
    other_too = store.runs.create(keyed("tenant:b", 1)).id
    plain = store.runs.create(keyed(None)).id
    claimed = [r.id for r in store.runs.claim("node-a", 10, {})]
    assert claimed == [hot[0], hot[1], other, plain]
    assert store.runs.claim("node-b", 10, {}) == []  # every key is at its limit
    store.runs.finish(hot[0], "node-a", RunState.SUCCEEDED)
    store.runs.finish(other, "node-a", RunState.SUCCEEDED)
    assert [r.id for r in store.runs.claim("node-b", 10, {})] == [hot[2], other_too]
    assert store.runs.get(hot[3]).state is RunState.QUEUED  # type: ignore[union-attr]


def test_a_key_crowding_the_head_of_the_queue_does_not_delay_the_rest(store: Store) -> None:
    """Hundreds of waiting runs of a full key ahead of another key's run: the claim's query
    leaves the full key out, so the other run is still found in the first page."""
    for i in range(300):
        store.runs.create(keyed("tenant:hot", 1, kwargs={"value": i}))
    late = store.runs.create(keyed("tenant:late", 1)).id
    first = store.runs.claim("node-a", 1, {})
    assert [r.concurrency_key for r in first] == ["tenant:hot"]
    assert [r.id for r in store.runs.claim("node-a", 1, {})] == [late]


def test_the_limit_counts_running_runs_of_every_node(store: Store) -> None:
    a, b, c = (store.runs.create(keyed("k", 2)).id for _ in range(3))
    assert [r.id for r in store.runs.claim("node-a", 1, {})] == [a]
    assert [r.id for r in store.runs.claim("node-b", 5, {})] == [b]
    assert store.runs.claim("node-c", 5, {}) == []
    store.runs.settle_lost(store.runs.get(a).started_at)  # type: ignore[union-attr]
    assert store.runs.get(a).state is RunState.FAILED  # type: ignore[union-attr]
    assert [r.id for r in store.runs.claim("node-c", 5, {})] == [c]


# -- three hosts on PostgreSQL ---------------------------------------------------------------------

@pytest.fixture
def servers(tmp_path):
    with Servers(tmp_path) as group:
        yield group


def test_no_instant_has_more_than_two_runs_of_the_key_on_three_hosts(pg_url, servers):
    hosts = pg_hosts(servers, pg_url, WORKER_THREADS=4)
    store = open_store(pg_url)
    hot_ids, other_ids = [], []
    for i in range(50):
        for key, ids, limit in (("tenant:hot", hot_ids, 2), (f"tenant:{i}", other_ids, 1)):
            response = hosts[i % 3].post("/api/runs", json={
                "task": "demo.sleep", "kwargs": {"seconds": 0.2, "steps": 1},
                "concurrency_key": key, "concurrency_limit": limit})
            assert response.status_code == 202, response.text
            assert response.json()["concurrency_key"] == key
            ids.append(response.json()["id"])
    hosts[0].wait_for(lambda: all(r.state is RunState.SUCCEEDED for r in all_runs(store)),
                      timeout=60, interval=0.25, message="100 runs to succeed")
    runs = {r.id: r for r in all_runs(store)}
    hot = [runs[i] for i in hot_ids]
    others = [runs[i] for i in other_ids]
    assert max_overlap(hot) == 2, "the hot key ran more (or fewer) than 2 at once"
    # Every host claimed (each one's claim counts the key's running runs across the cluster).
    # The key's own runs may stay on one host: a host whose run of the key ends takes the
    # key's next run over in the same transaction (the runner's handover).
    assert len({r.node for r in runs.values()}) == 3, "a host never claimed a run"
    # In order: each hot run started no earlier than the one queued before it.
    starts = [r.started_at for r in hot]
    assert starts == sorted(starts)
    hot_span = (max(r.finished_at for r in hot) - min(r.started_at for r in hot)).total_seconds()
    waits = [(r.started_at - r.created_at).total_seconds() for r in others]
    assert hot_span >= 50 * 0.2 / 2 * 0.9
    assert max(waits) < hot_span / 3, (
        f"other keys waited up to {max(waits):.2f}s while the hot key took {hot_span:.2f}s")
    print(f"hot key: 50 runs in {hot_span:.1f}s, at most 2 at once; other keys waited at most "
          f"{max(waits):.2f}s")


def test_the_key_frees_when_the_killed_nodes_run_is_settled_node_lost(pg_url, servers):
    hosts = pg_hosts(servers, pg_url, count=2)
    body = {"task": "demo.sleep", "kwargs": {"seconds": 60, "steps": 60},
            "concurrency_key": "tenant:9"}
    first = hosts[0].post("/api/runs", json=body).json()
    running = hosts[0].wait_run(first["id"], "running")
    second = hosts[0].post("/api/runs", json={**body, "kwargs": {"seconds": 0.1,
                                                                 "steps": 1}}).json()
    victim = next(h for h in hosts if _node_pid(running) in _worker_pids(h))
    survivor = next(h for h in hosts if h is not victim)
    assert survivor.run(second["id"])["state"] == "queued"
    victim.signal_group(signal.SIGKILL)
    victim.wait_exit()
    settled = survivor.wait_run(first["id"], "failed", timeout=3 + 10)
    assert settled["error"]["type"] == "NodeLost"
    done = survivor.wait_run(second["id"], "succeeded", timeout=10)
    assert done["node"] != running["node"]
