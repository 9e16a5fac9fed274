"""Revision 0004 (the ``scheduler_`` prefix) on a database with data in it, on SQLite and
PostgreSQL: every row kept under the new names, nothing left under an old one, the foreign key
still cascading, and the downgrade bringing the old names back."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa

from scheduler_app import migrations
from scheduler_app.migrations import VERSION_TABLE
from scheduler_app.store import Database, NewRun, Store
from scheduler_app.store.schema import metadata, run_logs, runs
from scheduler_app.timeutil import utcnow
from tests.test_migrations import (
    LEGACY,
    downgrade_to,
    legacy_columns,
    legacy_run_rows,
    schema_diff,
    table_names,
    unprefixed,
    upgrade_to,
)

OLD_TABLES = {"runs", "run_logs", "jobs", "nodes", "stats", "misfire_marks"}



def fill(db: Database) -> None:
    """Two runs (ids 1 and 2, from the id sequence), log lines of the first, a job, a node,
    stats and a misfire mark, in 0003's tables."""
    now = utcnow()
    tables = LEGACY.tables
    with db.engine.begin() as conn:
        conn.execute(tables["runs"].insert(), legacy_run_rows(now, ids=False))
        conn.execute(tables["run_logs"].insert(), [
            {"run_id": 1, "at": now, "level": "INFO", "message": f"line {i}"} for i in range(3)])
        conn.execute(tables["jobs"].insert(), [{
            "id": "nightly", "task": "demo.echo", "spec": {"task": "demo.echo", "kwargs": {}},
            "next_run_time": now.timestamp() + 60, "version": 7, "created_at": now,
            "updated_at": now}])
        conn.execute(tables["nodes"].insert(), [{
            "id": "h:1:a", "host": "h", "pid": 1, "role": "all", "started_at": now,
            "heartbeat_at": now, "stopped_at": None, "running": 0, "capacity": 4}])
        conn.execute(tables["stats"].insert(), [
            {"metric": "runs_finished", "task": "demo.echo", "label": "succeeded", "value": 1.0},
            {"metric": "run_seconds", "task": "demo.echo", "label": "sum", "value": 0.25}])
        conn.execute(tables["misfire_marks"].insert(), [
            {"job_id": "nightly", "fire_time": now.timestamp() - 60}])


def everything(db: Database, tables: sa.MetaData) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table 0004 knew, by the table's name before 0004."""
    with db.engine.connect() as conn:
        return {unprefixed(t.name): [tuple(r) for r in conn.execute(
            sa.select(*legacy_columns(t)).order_by(*t.primary_key.columns))]
            for t in tables.sorted_tables if unprefixed(t.name) in LEGACY.tables}


def catalog(db: Database) -> set[str]:
    """Every name the service's schema holds: tables, indexes, constraints, sequences."""
    with db.engine.connect() as conn:
        if db.is_sqlite:
            names = set(conn.exec_driver_sql("SELECT name FROM sqlite_master").scalars())
            inspector = sa.inspect(conn)
            for table in inspector.get_table_names():
                names |= {str(u["name"]) for u in inspector.get_unique_constraints(table)}
        else:
            names = set(conn.exec_driver_sql(
                "SELECT relname FROM pg_class JOIN pg_namespace n ON n.oid = relnamespace "
                "WHERE nspname = current_schema() UNION SELECT conname FROM pg_constraint "
                "JOIN pg_namespace n ON n.oid = connamespace "
                "WHERE nspname = current_schema()").scalars())
    return {name for name in names if VERSION_TABLE not in name}


def test_0004_prefixes_every_name_and_keeps_every_row(db: Database) -> None:
    upgrade_to(db, "0003")
    fill(db)
    before = everything(db, LEGACY)
    assert sum(len(rows) for rows in before.values()) == 10
    assert [row[0] for row in before["runs"]] == [1, 2]
    at_0003 = catalog(db)

    assert db.migrate() == ("0003", migrations.head())
    assert table_names(db) == set(metadata.tables)
    assert everything(db, metadata) == before
    assert schema_diff(db) == []
    renamed = catalog(db)
    assert all("scheduler_" in name for name in renamed), renamed

    downgrade_to(db, "0003")
    assert table_names(db) == OLD_TABLES
    assert everything(db, LEGACY) == before
    assert catalog(db) == at_0003

    assert db.migrate() == ("0003", migrations.head())
    assert everything(db, metadata) == before
    store = Store(db)
    # The renamed id sequence (PostgreSQL) goes on where it was.
    run = store.runs.create(NewRun(task="demo.echo", kwargs={}, max_attempts=1,
                                   retry_backoff=1.0, timeout=None, scheduled_for=utcnow()))
    assert run.id == 3
    # Deleting a run still deletes its log lines (SQLite: the engine's foreign keys are on).
    with db.engine.begin() as conn:
        conn.execute(runs.delete().where(runs.c.id == 1))
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(run_logs)).scalar() == 0

    # The same names as a database made at head in one step (create_all), down to the
    # primary keys, foreign keys and sequences PostgreSQL named by itself.
    with db.engine.begin() as conn:
        metadata.drop_all(conn)
        conn.execute(sa.text(f"DROP TABLE {VERSION_TABLE}"))
    assert db.migrate() == (None, migrations.head())
    assert catalog(db) == renamed


def test_0004_refuses_to_copy_a_sqlite_table_with_foreign_keys_on(tmp_path: Any) -> None:
    """Copying the runs table with them on would delete every run's log lines."""
    db = Database(f"sqlite:///{tmp_path / 'scheduler.sqlite3'}")
    try:
        upgrade_to(db, "0003")
        fill(db)
        with pytest.raises(RuntimeError, match="foreign keys are on"):
            upgrade_to(db, "0004")
        assert everything(db, LEGACY)["run_logs"] != []
        with db.engine.connect() as conn:
            assert migrations.current(conn) == "0003"
    finally:
        db.dispose()
