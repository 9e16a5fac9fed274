"""Revision 0012 (no ``ix_scheduler_runs_node_state``) on a database with runs in it, on SQLite
and PostgreSQL: the index is gone and every row kept, a node's looks for its running runs still
find exactly them, through a seek to the running runs, and the downgrade makes 0010's index of
the running runs again."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa

from scheduler_app.store import Database, Store
from scheduler_app.store.schema import nodes, runs
from scheduler_app.timeutil import utcnow
from tests.conftest import add_finished_runs, new_run, query_plans
from tests.test_migrations import downgrade_to, index_definitions, run_row

NAME = "ix_scheduler_runs_node_state"


def test_0012_drops_the_index_of_running_runs_by_node(db: Database) -> None:
    db.migrate()
    downgrade_to(db, "0011")
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(runs.insert(), [
            run_row(now, state=state, node=node, cancel_requested=cancel, started_at=now)
            for state, node, cancel in (("running", "n1", True), ("running", "n1", False),
                                        ("running", "n2", True), ("succeeded", "n1", True))])
        rows = conn.execute(sa.select(runs).order_by(runs.c.id)).all()
    sql = index_definitions(db, [NAME])[NAME]
    assert "node" in sql and "WHERE" in sql and "'running'" in sql, sql

    assert db.migrate() == ("0011", "0012")
    assert index_definitions(db, [NAME]) == {}
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(runs).order_by(runs.c.id)).all() == rows
    store = Store(db)
    assert store.runs.cancel_requested_ids("n1") == {rows[0].id}
    # A node is lost: only its running run is settled, the live node's are left running.
    with db.engine.begin() as conn:
        conn.execute(nodes.insert(), [{
            "id": "n1", "host": "h", "pid": 1, "role": "all", "started_at": now,
            "heartbeat_at": now + timedelta(seconds=5), "stopped_at": None, "running": 2,
            "capacity": 4}])
    lost = store.runs.settle_lost(now + timedelta(seconds=1), dead_nodes=["n2"])
    assert [run.id for run in lost] == [rows[2].id]
    assert store.runs.cancel_requested_ids("n1") == {rows[0].id}

    downgrade_to(db, "0011")
    assert "'running'" in index_definitions(db, [NAME])[NAME]
    db.migrate()
    assert index_definitions(db, [NAME]) == {}


def test_a_nodes_look_for_cancels_seeks_the_running_runs(tmp_path: Path) -> None:
    """The look names the state as a literal, so it seeks the running runs in the index by
    state, on a file where most runs with a node have long finished, and never reads every
    run of the node."""
    store = Store(Database(f"sqlite:///{tmp_path / 'plans.sqlite3'}"))
    store.db.migrate()
    try:
        add_finished_runs(store, 30, "n1")
        running = store.runs.create(new_run(), running_on="n1", count_wait=False)
        other = store.runs.create(new_run(), running_on="n2", count_wait=False)
        for run in (running, other):
            store.runs.request_cancel(run.id)
        found: list[set[int]] = []
        [(_, plan)] = query_plans(store, lambda: found.append(store.runs.cancel_requested_ids(
            "n1")), keep=lambda sql: "cancel_requested" in sql)
        assert found == [{running.id}]
        assert "ix_scheduler_runs_state_id (state=?)" in plan, plan
    finally:
        store.db.dispose()
