"""A claim takes due runs oldest first, whichever way it takes each: runs free of every limit
one statement at a time (SQLite), the rest weighed with every limit counted. On a real SQLite
file and a real PostgreSQL database."""

from __future__ import annotations

from datetime import timedelta

from scheduler_app.store import RunState
from scheduler_app.timeutil import utcnow
from tests.conftest import new_run

TASKS = {"demo.echo", "demo.sleep"}


def ago(seconds: float):
    return utcnow() - timedelta(seconds=seconds)


def test_an_older_run_with_a_concurrency_key_is_not_overtaken_by_a_free_one(store):
    keyed = store.runs.create(new_run(scheduled_for=ago(3), concurrency_key="k",
                                      concurrency_limit=1))
    free = store.runs.create(new_run(scheduled_for=ago(2)))
    assert [r.id for r in store.runs.claim("node-a", 1, {}, tasks=TASKS)] == [keyed.id]
    assert [r.id for r in store.runs.claim("node-a", 1, {}, tasks=TASKS)] == [free.id]


def test_free_runs_then_limited_ones_in_one_claim_oldest_first(store):
    first = store.runs.create(new_run(scheduled_for=ago(5)))
    second = store.runs.create(new_run(scheduled_for=ago(4)))
    capped = store.runs.create(new_run(task="demo.sleep", scheduled_for=ago(3)))
    last = store.runs.create(new_run(scheduled_for=ago(2)))
    later = store.runs.create(new_run(scheduled_for=utcnow() + timedelta(hours=1)))
    other = store.runs.create(new_run(task="demo.fail", scheduled_for=ago(6)))

    claimed = store.runs.claim("node-a", 10, {"demo.sleep": 5}, tasks=TASKS)

    assert [r.id for r in claimed] == [first.id, second.id, capped.id, last.id]
    assert all((r.state, r.node) == (RunState.RUNNING, "node-a") for r in claimed)
    assert store.runs.get(later.id).state is RunState.QUEUED  # not due
    assert store.runs.get(other.id).state is RunState.QUEUED  # not a task of node-a
    waits = store.stats.snapshot(lease_seconds=30).queue_wait
    assert waits["demo.echo"].count == 3 and waits["demo.sleep"].count == 1


def test_a_task_at_its_max_running_is_left_queued(store):
    store.runs.create(new_run(task="demo.sleep"), running_on="node-b")
    capped = store.runs.create(new_run(task="demo.sleep", scheduled_for=ago(3)))
    free = store.runs.create(new_run(scheduled_for=ago(1)))
    claimed = store.runs.claim("node-a", 2, {"demo.sleep": 1}, tasks=TASKS)
    assert [r.id for r in claimed] == [free.id]
    assert store.runs.get(capped.id).state is RunState.QUEUED
