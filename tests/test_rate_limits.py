"""Rate limits: at most ``count`` starts per sliding ``period`` per rate key, held by the claim
across the cluster. A run held back stays queued with the time its slot opens
(``throttled_until``), uses no attempt and holds no thread. The store on SQLite and
PostgreSQL, then a short run on three real hosts on PostgreSQL (the three-minute one is
``bench/rate_limit.py``)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from scheduler_app.store import RunState, Store
from scheduler_app.timeutil import utcnow
from tests.conftest import new_run, wait_for
from tests.servers import Servers
from tests.test_cluster import all_runs, open_store, pg_hosts


def limited(rate: str = "2/m", key: str = "api", **more: Any) -> Any:
    return new_run(rate_limit=rate, rate_key=key, **more)


def test_a_full_window_holds_runs_back_with_the_time_each_slot_opens(store: Store) -> None:
    ids = [store.runs.create(limited(kwargs={"value": i})).id for i in range(5)]
    other = store.runs.create(limited(key="other")).id
    claimed = store.runs.claim("node-a", 10, {})
    assert [r.id for r in claimed] == [ids[0], ids[1], other]
    started = claimed[0].started_at
    assert started is not None
    held = [store.runs.get(i) for i in ids[2:]]
    assert all(r is not None and r.state is RunState.QUEUED and r.attempt == 1
               and r.node is None and r.errors == [] for r in held)
    # Two starts a minute: the third and fourth may start a minute after the first two, the
    # fifth a minute after those.
    slots = [r.throttled_until for r in held]  # type: ignore[union-attr]
    minute = timedelta(minutes=1)
    assert [round((s - started) / minute, 2) for s in slots] == [1.0, 1.0, 2.0]  # type: ignore
    assert store.stats.snapshot(3).throttled == {"demo.echo": 3}
    # Later claims pass them over until their slot, without counting them again.
    assert store.runs.claim("node-b", 10, {}) == []
    assert store.stats.snapshot(3).throttled == {"demo.echo": 3}


def test_every_start_counts_a_retry_included(store: Store) -> None:
    """Two starts an hour: a run's first attempt and another run use them up, so the first
    run's retry waits for the hour, with its attempt count unchanged by the wait."""
    first = store.runs.create(limited(rate="2/h", max_attempts=3, retry_backoff=0.01)).id
    second = store.runs.create(limited(rate="2/h")).id
    [claimed] = store.runs.claim("node-a", 1, {})
    assert claimed.id == first
    retried = store.runs.finish(first, "node-a", RunState.FAILED,
                                error={"type": "E", "message": "m", "traceback": None})
    assert retried is not None and retried.state is RunState.QUEUED and retried.attempt == 2
    wait_for(lambda: retried.scheduled_for <= utcnow(), message="the retry to be due")
    assert [r.id for r in store.runs.claim("node-a", 5, {})] == [second]
    held = store.runs.get(first)
    assert held is not None and held.state is RunState.QUEUED and held.attempt == 2
    assert held.throttled_until is not None and claimed.started_at is not None
    assert held.throttled_until - claimed.started_at == timedelta(hours=1)


def test_different_rate_keys_do_not_share_a_window(store: Store) -> None:
    for key in ("a", "b", "c"):
        for _ in range(2):
            store.runs.create(limited(rate="1/h", key=key))
    assert sorted(r.rate_key for r in store.runs.claim("n", 10, {})) == ["a", "b", "c"]


# -- three hosts on PostgreSQL ---------------------------------------------------------------------

@pytest.fixture
def servers(tmp_path):
    with Servers(tmp_path) as group:
        yield group


def test_ten_a_second_across_three_hosts(pg_url, servers):
    hosts = pg_hosts(servers, pg_url)
    store = open_store(pg_url)
    for i in range(50):
        response = hosts[i % 3].post("/api/runs", json={
            "task": "demo.echo", "kwargs": {"value": i}, "rate_limit": "10/s"})
        assert response.status_code == 202, response.text
        assert response.json()["rate_limit"] == "10/s"
        assert response.json()["rate_key"] == "demo.echo"
    hosts[0].wait_for(lambda: all(r.state is RunState.SUCCEEDED for r in all_runs(store)),
                      timeout=30, interval=0.25, message="50 runs to succeed")
    runs = all_runs(store)
    starts = sorted(r.started_at for r in runs)
    busiest = max(sum(1 for t in starts if s <= t < s + timedelta(seconds=1)) for s in starts)
    assert busiest <= 10, f"{busiest} starts in one second"
    span = (starts[-1] - starts[0]).total_seconds()
    assert 4.0 <= span <= 5.0 + 1.5, f"50 starts at 10/s took {span:.2f}s"
    assert all(r.attempt == 1 and r.errors == [] for r in runs)
    assert len({r.node for r in runs}) > 1
    metrics = hosts[1].get("/metrics").text
    assert 'scheduler_runs_throttled_total{task="demo.echo"}' in metrics
    print(f"50 starts at 10/s on 3 hosts: {span:.2f}s, at most {busiest} in any second")


def test_a_claim_reads_past_a_page_of_held_back_runs(store: Store) -> None:
    """A node with one free thread reads 4 due runs at a time: runs its rate limit holds back
    are passed over, page after page, to the first run it may start."""
    held = [store.runs.create(limited(rate="1/h", kwargs={"value": i})).id for i in range(10)]
    free = store.runs.create(new_run()).id
    assert [r.id for r in store.runs.claim("node-a", 1, {})] == [held[0]]
    assert [r.id for r in store.runs.claim("node-a", 1, {})] == [free]
    waiting = [store.runs.get(i) for i in held[1:]]
    assert all(r is not None and r.throttled_until is not None for r in waiting)
    assert store.stats.snapshot(3).throttled == {"demo.echo": 9}
