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


def test_every_read_of_the_queue_by_due_time_follows_its_index(tmp_path, monkeypatch):
    """``ix_scheduler_runs_state_due`` holds queued runs only (revision 0009), which a query
    can use only if it names the state as a literal: every statement that looks for due runs
    (the next due time, the look before a claim, the claim of free runs, the counted claim)
    must search that index, never scan the runs, on a SQLite file with many finished runs."""
    import sqlite3
    from typing import Any

    import sqlalchemy as sa

    from scheduler_app.store import Database, Store, driver
    from scheduler_app.store.runs import _NEXT_DUE

    path = tmp_path / "plans.sqlite3"
    store = Store(Database(f"sqlite:///{path}"))
    store.db.migrate()
    try:
        for _ in range(50):
            done = store.runs.create(new_run(), running_on="node-b", count_wait=False)
            store.runs.finish(done.id, "node-b", RunState.SUCCEEDED)
        store.runs.create(new_run(scheduled_for=ago(3), concurrency_key="k",
                                  concurrency_limit=1))
        for _ in range(3):
            store.runs.create(new_run(scheduled_for=ago(2)))
        # Each statement as prepared, with its parameters as bound (not the expanded text,
        # which names 'queued' as a literal whatever the query said).
        statements: list[tuple[str, Any]] = []
        real_execute = driver._Form.execute

        def execute(form: Any, raw: Any, params: Any) -> Any:
            statements.append((form.sql, form.parameters(params)))
            return real_execute(form, raw, params)

        def capture(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
            statements.append((sql, params))

        monkeypatch.setattr(driver._Form, "execute", execute)
        sa.event.listen(store.db.engine, "before_cursor_execute", capture)
        try:
            claimed = store.runs.claim("node-a", 2, {"demo.sleep": 1}, tasks=TASKS)  # counted
            claimed += store.runs.claim("node-a", 2, {}, tasks=TASKS)  # free, one at a time
        finally:
            sa.event.remove(store.db.engine, "before_cursor_execute", capture)
        assert len(claimed) == 4
        reads = [(sql, params) for sql, params in statements if "scheduled_for <" in sql]
        reads.append((str(_NEXT_DUE.compile(store.db.engine)), ()))
        with sqlite3.connect(path) as conn:
            plans = {sql: " / ".join(row[3] for row in conn.execute(
                "EXPLAIN QUERY PLAN " + sql, params)) for sql, params in reads}
        assert len(plans) >= 3
        for statement, plan in plans.items():
            assert "ix_scheduler_runs_state_due" in plan, (plan, statement)
            assert "SCAN scheduler_runs" not in plan, (plan, statement)
    finally:
        store.db.dispose()
