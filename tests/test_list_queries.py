"""Listing jobs and runs stays cheap on a large table: the list queries follow an index (no sort
of the whole table, checked with SQLite's query plan), and the job list's two-part order
(scheduled jobs by next run time and id, then paused jobs by id) pages without a repeat or a
gap, on SQLite and PostgreSQL alike (bench/scale.py measures the latency)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest

from scheduler_app.store import RunState, Store
from scheduler_app.store.schema import jobs, runs
from scheduler_app.timeutil import utcnow
from tests.conftest import migrated_store, query_plans

STATES = [RunState.SUCCEEDED, RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED]


def an_hour_ago() -> datetime:
    """Jobs made before ``add_runs``' runs: a job's last run is created after its row."""
    return utcnow() - timedelta(hours=1)


@pytest.fixture
def sqlite_store(db_url: str) -> Iterator[Store]:
    yield from migrated_store(db_url)


def add_jobs(store: Store, specs: list[tuple[str, float | None]], task: str = "demo.echo",
             created_at: datetime | None = None) -> None:
    """Jobs by (id, next run time in epoch seconds or None for paused), written directly,
    created ``created_at`` (now by default)."""
    now = created_at or utcnow()
    with store.db.write() as conn:
        conn.execute(jobs.insert(), [
            {"id": job_id, "task": task, "spec": {"task": task, "kwargs": {}},
             "next_run_time": nrt, "version": 1, "created_at": now, "updated_at": now}
            for job_id, nrt in specs])


def add_runs(store: Store, count: int, job_ids: list[str | None]) -> None:
    """``count`` finished runs cycling through ``STATES`` and ``job_ids``, oldest first."""
    now = utcnow()
    rows = []
    for i in range(count):
        at = now - timedelta(seconds=count - i)
        job_id = job_ids[i % len(job_ids)]
        rows.append({
            "task": "demo.echo", "kwargs": {"value": i}, "job_id": job_id,
            "fire_time": at if job_id else None, "state": STATES[i % len(STATES)].value,
            "attempt": 1, "max_attempts": 1, "retry_backoff": 2.0, "timeout": None,
            "cancel_requested": False, "errors": [], "node": "h:1:a", "created_at": at,
            "scheduled_for": at, "started_at": at, "finished_at": at})
    with store.db.write() as conn:
        conn.execute(runs.insert(), rows)


def page_all(store: Store, limit: int, **filters: Any) -> list[str]:
    """Every job id, page by page with the keyset cursor."""
    seen: list[str] = []
    after = None
    while True:
        page = store.jobs.page(limit=limit, after=after, **filters)
        seen += [r.id for r in page]
        if len(page) < limit:
            return seen
        after = store.jobs.key(page[-1])


# -- the job list's order and paging ----------------------------------------------------------
def test_jobs_page_scheduled_by_time_and_id_then_paused_by_id(store: Store) -> None:
    base = utcnow().timestamp() + 3600
    add_jobs(store, [("c", base + 2), ("p2", None), ("b", base + 1), ("a2", base + 1),
                     ("p1", None), ("a1", base), ("z", base + 3)])
    expected = ["a1", "a2", "b", "c", "z", "p1", "p2"]
    assert [r.id for r in store.jobs.page(limit=50)] == expected
    for limit in (1, 2, 3, 5, 7):  # pages end on ties, on the boundary, among the paused
        assert page_all(store, limit) == expected
    assert page_all(store, 2, paused=True) == ["p1", "p2"]
    assert page_all(store, 2, paused=False) == ["a1", "a2", "b", "c", "z"]


def test_jobs_page_filters_by_task(store: Store) -> None:
    base = utcnow().timestamp() + 60
    add_jobs(store, [("e1", base), ("e2", None)], task="demo.echo")
    add_jobs(store, [("s1", base - 1), ("s2", None)], task="demo.sleep")
    assert page_all(store, 1, task="demo.echo") == ["e1", "e2"]
    assert page_all(store, 1, task="demo.sleep", paused=False) == ["s1"]


def test_a_cursor_among_paused_jobs_with_paused_false_ends_the_list(store: Store) -> None:
    add_jobs(store, [("a", utcnow().timestamp() + 60), ("p1", None), ("p2", None)])
    assert store.jobs.page(limit=5, paused=False, after=(None, "p1")) == []
    assert [r.id for r in store.jobs.page(limit=5, after=(None, "p1"))] == ["p2"]


# -- the last run of each job -----------------------------------------------------------------
def test_last_runs_is_the_newest_run_of_each_job(store: Store) -> None:
    add_jobs(store, [("j1", None), ("j2", None), ("idle", None)], created_at=an_hour_ago())
    add_runs(store, 40, ["j1", "j2", None, "gone"])  # "gone": a job deleted since
    newest = {}
    for run in store.runs.find(limit=100):
        newest.setdefault(run.job_id, run)
    last = store.runs.last_runs(["j1", "j2", "idle"])
    assert set(last) == {"j1", "j2"}
    assert last["j1"] == newest["j1"] and last["j2"] == newest["j2"]
    assert store.runs.last_runs([]) == {}


def test_runs_by_state_page_newest_first(store: Store) -> None:
    add_runs(store, 60, [None])
    failed = [r.id for r in store.runs.find(state=RunState.FAILED, limit=100)]
    assert len(failed) == 15 and failed == sorted(failed, reverse=True)
    paged = store.runs.find(state=RunState.FAILED, limit=4)
    while len(paged) % 4 == 0 and paged:
        more = store.runs.find(state=RunState.FAILED, limit=4, before_id=paged[-1].id)
        if not more:
            break
        paged += more
    assert [r.id for r in paged] == failed


# -- the plans: an index seek, never a sort of the table --------------------------------------
def plans(store: Store, call: Callable[[], Any]) -> list[str]:
    """SQLite's query plan of every SELECT that ``call`` makes."""
    found = [plan for _, plan in query_plans(
        store, call, keep=lambda sql: sql.lstrip().upper().startswith("SELECT"))]
    assert found
    return found


def test_list_queries_follow_an_index(sqlite_store: Store) -> None:
    store = sqlite_store
    base = utcnow().timestamp() + 3600
    add_jobs(store, [(f"job-{i:03d}", None if i % 10 == 0 else base + i) for i in range(200)],
             created_at=an_hour_ago())
    add_runs(store, 400, [f"job-{i:03d}" for i in range(0, 200, 3)] + [None])

    for state in RunState:
        for plan in plans(store, lambda s=state: store.runs.find(state=s, limit=50)) + plans(
                store, lambda s=state: store.runs.find(state=s, limit=50, before_id=200)):
            assert "ix_scheduler_runs_state_id" in plan and "TEMP B-TREE" not in plan, plan
    key = store.jobs.key(store.jobs.page(limit=50)[-1])
    for call in (lambda: store.jobs.page(limit=50), lambda: store.jobs.page(limit=50, after=key),
                 lambda: store.jobs.page(limit=500), lambda: store.jobs.page(limit=50,
                                                                              paused=True)):
        for plan in plans(store, call):
            assert "ix_scheduler_jobs_next_run" in plan and "TEMP B-TREE" not in plan, plan
    ids = [f"job-{i:03d}" for i in range(50)]
    [plan] = plans(store, lambda: store.runs.last_runs(ids))
    assert "ix_scheduler_runs_job" in plan and "TEMP B-TREE" not in plan, plan
    assert "SCAN scheduler_runs" not in plan, plan


def test_one_tasks_job_pages_follow_the_task_index(sqlite_store: Store) -> None:
    """GET /api/jobs?task=...: both parts of the list, and every kind of cursor, are one range
    of ``ix_scheduler_jobs_task_next_run`` in list order, never that task's jobs sorted."""
    store = sqlite_store
    base = utcnow().timestamp() + 3600
    for task in ("demo.echo", "demo.sleep"):
        add_jobs(store, [(f"{task}-{i:03d}", None if i % 10 == 0 else base + i)
                         for i in range(200)], task=task)
    key = store.jobs.key(store.jobs.page(limit=50, task="demo.sleep")[-1])
    calls = [lambda: store.jobs.page(limit=50, task="demo.sleep"),
             lambda: store.jobs.page(limit=50, task="demo.sleep", after=key),
             lambda: store.jobs.page(limit=500, task="demo.sleep"),
             lambda: store.jobs.page(limit=50, task="demo.sleep", paused=False),
             lambda: store.jobs.page(limit=50, task="demo.sleep", paused=True),
             lambda: store.jobs.page(limit=50, task="demo.sleep", after=(None, "demo.sleep-010"))]
    for call in calls:
        for plan in plans(store, call):
            assert "ix_scheduler_jobs_task_next_run (task=?" in plan, plan
            assert "TEMP B-TREE" not in plan, plan
    assert [r.id for r in store.jobs.page(limit=500, task="demo.sleep")] == [
        f"demo.sleep-{i:03d}" for i in range(200) if i % 10] + [
        f"demo.sleep-{i:03d}" for i in range(0, 200, 10)]


# -- the trigger's sentence -------------------------------------------------------------------
def test_cron_sentences_are_built_once_per_expression() -> None:
    from scheduler_app.scheduler import triggers

    triggers._cron_sentence.cache_clear()
    first = triggers.describe({"type": "cron", "expr": "*/5 * * * *"})
    for _ in range(50):
        assert triggers.describe({"type": "cron", "expr": "*/5 * * * *"}) == first
    assert first == "Every 5 minutes"
    assert triggers._cron_sentence.cache_info().misses == 1
    # What a row written by other code may hold still describes without failing.
    assert triggers.describe({"type": "cron", "expr": ["0", "*"]}) == "cron ['0', '*']"
    assert triggers.describe({"type": "cron", "expr": "not cron"}) == "cron not cron"
    assert triggers.describe({"type": "cron", "expr": "0 9 * * 1", "timezone": "Europe/Paris"}
                             ) == "At 09:00, only on Monday (Europe/Paris)"
