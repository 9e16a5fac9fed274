"""Revision 0010 (``ix_scheduler_runs_node_state`` over the running runs only) on a database
with runs in it, on SQLite and PostgreSQL: the index keeps its name and columns and leaves out
every run that is not running, every row is kept, a node's look for cancels still finds its
runs through it, and the downgrade restores 0009's index over the runs with a node."""

from __future__ import annotations

import sqlalchemy as sa

from scheduler_app.store import Database, Store
from scheduler_app.store.schema import runs
from scheduler_app.timeutil import utcnow
from tests.test_migrations import downgrade_to, index_definitions, run_row, upgrade_to

NAME = "ix_scheduler_runs_node_state"


def definition(db: Database) -> str:
    """The index's SQL as the database keeps it, without quotes, casts and parentheses."""
    sql = index_definitions(db, [NAME])[NAME]
    for noise in ("(", ")", "::text", '"'):
        sql = sql.replace(noise, "")
    return " ".join(sql.split())


def test_0010_keeps_only_running_runs_in_the_node_index(db: Database) -> None:
    db.migrate()
    downgrade_to(db, "0009")
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(runs.insert(), [
            run_row(now, state=state, cancel_requested=cancel, node=node,
                    started_at=None if node is None else now)
            for state, node, cancel in (("running", "n1", True), ("running", "n1", False),
                                        ("succeeded", "n1", True), ("queued", None, False),
                                        ("running", "n2", True))])
    assert "WHERE node IS NOT NULL" in definition(db)

    upgrade_to(db, "0010")
    sql = definition(db)
    assert "WHERE state = 'running'" in sql and "node, state" in sql, sql
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar() == 5
        ids = dict(conn.execute(sa.select(runs.c.id, runs.c.state)).all())
    store = Store(db)
    cancelled = store.runs.cancel_requested_ids("n1")
    assert len(cancelled) == 1 and ids[next(iter(cancelled))] == "running"

    downgrade_to(db, "0009")
    assert "WHERE node IS NOT NULL" in definition(db)
    upgrade_to(db, "0010")

