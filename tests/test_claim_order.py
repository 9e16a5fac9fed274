"""A claim takes due runs oldest first, whichever way it takes each: runs free of every limit
one statement at a time (SQLite), the rest weighed with every limit counted. On a real SQLite
file and a real PostgreSQL database."""

from __future__ import annotations

from datetime import timedelta

from scheduler_app.store import RunState
from scheduler_app.store.schema import IS_QUEUED
from scheduler_app.timeutil import utcnow
from tests.conftest import add_finished_runs, generic_plan, new_run, plan_of, query_plans

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


def test_every_read_of_the_queue_by_due_time_follows_its_index(store):
    """``ix_scheduler_runs_state_due`` holds queued runs only (revision 0009), which a query
    can use only if it names the state as a literal: every statement that looks for due runs
    (the next due time, the look before a claim, the claim of free runs, the counted claim)
    must search that index, never scan the runs, among many finished runs. On PostgreSQL in
    the generic plan a prepared statement comes to, which knows no parameter's value."""
    from scheduler_app.store.runs import _NEXT_DUE

    add_finished_runs(store, 50, "node-b")
    store.runs.create(new_run(scheduled_for=ago(3), concurrency_key="k", concurrency_limit=1))
    for _ in range(3):
        store.runs.create(new_run(scheduled_for=ago(2)))
    claimed: list = []

    def claim() -> None:
        claimed.extend(store.runs.claim("node-a", 2, {"demo.sleep": 1}, tasks=TASKS))  # counted
        claimed.extend(store.runs.claim("node-a", 2, {}, tasks=TASKS))  # free, one by one

    plans = dict(query_plans(store, claim, keep=lambda sql: "scheduled_for <" in sql))
    assert len(claimed) == 4
    next_due = str(_NEXT_DUE.compile(store.db.engine))
    plans[next_due] = plan_of(store, next_due)
    assert len(plans) >= 3
    for statement, plan in plans.items():
        assert "ix_scheduler_runs_state_due" in plan, (plan, statement)
        assert not scans_the_runs(plan), (plan, statement)


def test_a_state_given_as_a_parameter_would_miss_the_index(pg_store):
    """The check above can fail: the same look for a due run with its state bound as a
    parameter cannot use the partial index in PostgreSQL's generic plan. (SQLite plans a
    statement with the values bound to it, and uses the index for a bound 'queued' too: there
    the check shows only that the index is searched.)"""
    import sqlalchemy as sa

    from scheduler_app.store.schema import runs

    add_finished_runs(pg_store, 20, "node-b")
    literal = sa.select(runs.c.id).where(IS_QUEUED, runs.c.scheduled_for <= utcnow())
    bound = sa.select(runs.c.id).where(runs.c.state == sa.bindparam("state", "queued"),
                                       runs.c.scheduled_for <= utcnow())
    engine = pg_store.db.engine
    assert "ix_scheduler_runs_state_due" in generic_plan(pg_store, str(literal.compile(engine)))
    plan = generic_plan(pg_store, str(bound.compile(engine)))
    assert "ix_scheduler_runs_state_due" not in plan, plan


def scans_the_runs(plan: str) -> bool:
    """Whether a plan reads the runs table through (SQLite's ``SCAN``, PostgreSQL's
    ``Seq Scan``), rather than searching an index."""
    return "SCAN scheduler_runs" in plan or "Seq Scan on scheduler_runs" in plan
