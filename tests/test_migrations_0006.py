"""Revision 0006 (each node's task names) on a database with a node in it, on SQLite and
PostgreSQL: the nullable column is added with the row kept (NULL: the node does not say), and
the downgrade removes it."""

from __future__ import annotations

import sqlalchemy as sa

from scheduler_app.store import Database
from scheduler_app.timeutil import utcnow
from tests.test_migrations import LEGACY, downgrade_to, upgrade_to


def node_columns(db: Database) -> list[str]:
    return [c["name"] for c in sa.inspect(db.engine).get_columns("scheduler_nodes")]


def test_0006_adds_the_nodes_task_names(db: Database) -> None:
    db.migrate()
    downgrade_to(db, "0005")
    assert "tasks" not in node_columns(db)
    now = utcnow()
    old_nodes = LEGACY.tables["nodes"].to_metadata(sa.MetaData(), name="scheduler_nodes")
    with db.engine.begin() as conn:
        conn.execute(old_nodes.insert(), [{
            "id": "h:1:a", "host": "h", "pid": 1, "role": "all", "started_at": now,
            "heartbeat_at": now, "stopped_at": None, "running": 0, "capacity": 4}])

    upgrade_to(db, "0006")
    assert node_columns(db)[-1] == "tasks"
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id, tasks FROM scheduler_nodes")).all() == [
            ("h:1:a", None)]

    downgrade_to(db, "0005")
    assert "tasks" not in node_columns(db)
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM scheduler_nodes")).scalars().all() == [
            "h:1:a"]
