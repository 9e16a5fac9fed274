"""Revision 0011 (``uq_scheduler_runs_job_fire`` a partial unique index over the runs with a
job, where it was a unique constraint) on a database with runs and log lines in it, on SQLite
and PostgreSQL: every row and log line kept, every other index as it was, one run per job and
fire time still held, runs without a job left out of the index, and the downgrade restoring
the constraint."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler_app.migrations import MigrationError
from scheduler_app.store import Database, RunState, Store
from scheduler_app.store.schema import run_logs, runs
from scheduler_app.timeutil import utcnow
from tests.conftest import new_run
from tests.test_migrations import (
    downgrade_to,
    index_definitions,
    migrate_to,
    run_row,
    upgrade_to,
)

NAME = "uq_scheduler_runs_job_fire"
TABLE = "scheduler_runs"


def all_rows(db: Database) -> dict[str, list[tuple[Any, ...]]]:
    with db.engine.connect() as conn:
        return {table.name: [tuple(r) for r in conn.execute(
            sa.select(table).order_by(table.c.id))] for table in (runs, run_logs)}


def other_indexes(db: Database) -> dict[str, str]:
    """Every index of the runs table but the one 0011 changes, as the database keeps it."""
    return {name: sql for name, sql in index_definitions(db).items() if name != NAME}


def unique_fire(db: Database) -> str:
    """How the database holds one run per job and fire time: the ``constraint`` (0010) or
    the partial unique ``index`` over the runs with a job (0011)."""
    with db.engine.connect() as conn:
        constraints = {c["name"] for c in sa.inspect(conn).get_unique_constraints(TABLE)}
    index = index_definitions(db, [NAME]).get(NAME)
    if NAME in constraints:
        assert index is None or "WHERE" not in index, index  # PostgreSQL's, of the constraint
        return "constraint"
    assert index is not None and "UNIQUE" in index and "(job_id, fire_time)" in index, index
    assert "WHERE" in index and "job_id IS NOT NULL" in index, index
    return "index"


def refuses_a_second_run_of_a_fire(db: Database, fire: Any) -> bool:
    try:
        with db.engine.begin() as conn:
            conn.execute(runs.insert(), [run_row(fire, job_id="nightly", fire_time=fire)])
    except sa.exc.IntegrityError:
        return True
    return False


def test_0011_makes_the_job_fire_constraint_an_index_of_the_runs_with_a_job(db: Database
                                                                            ) -> None:
    db.migrate()
    downgrade_to(db, "0010")
    now = utcnow()
    fires = [now - timedelta(minutes=m) for m in range(3)]
    with db.engine.begin() as conn:
        conn.execute(runs.insert(), [
            *(run_row(fire, job_id="nightly", fire_time=fire, state="succeeded")
              for fire in fires),
            *(run_row(now, state="running", node="n1", job_id=None, fire_time=None)
              for _ in range(4))])
        conn.execute(run_logs.insert(), [
            {"run_id": 1, "at": now, "level": "INFO", "message": f"line {i}"}
            for i in range(3)])
    assert unique_fire(db) == "constraint"
    before, indexes = all_rows(db), other_indexes(db)
    assert len(before[runs.name]) == 7 and len(before[run_logs.name]) == 3

    migrate_to(db, "0011")
    assert unique_fire(db) == "index"
    assert all_rows(db) == before
    assert other_indexes(db) == indexes
    assert refuses_a_second_run_of_a_fire(db, fires[1])
    assert not refuses_a_second_run_of_a_fire(db, now + timedelta(minutes=1))
    # The store works on it: a run-now is written (no job: not in the index) and settled, and
    # deleting a run still deletes its log lines (SQLite: the engine's foreign keys are on).
    store = Store(db)
    run = store.runs.create(new_run(), running_on="n1", count_wait=False)
    assert run.id > max(row[0] for row in all_rows(db)[runs.name] if row[0] != run.id)
    store.runs.finish(run.id, "n1", RunState.SUCCEEDED)
    with db.engine.begin() as conn:
        conn.execute(runs.delete().where(runs.c.id == 1))
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(run_logs)).scalar() == 0

    after = all_rows(db)
    downgrade_to(db, "0010")
    assert unique_fire(db) == "constraint"
    assert all_rows(db) == after
    assert other_indexes(db) == indexes
    assert refuses_a_second_run_of_a_fire(db, fires[2])
    migrate_to(db, "0011")
    assert unique_fire(db) == "index"


def test_0011_refuses_to_copy_a_sqlite_table_with_foreign_keys_on(tmp_path: Path) -> None:
    """Copying the runs table with them on would delete every run's log lines."""
    db = Database(f"sqlite:///{tmp_path / 'scheduler.sqlite3'}")
    try:
        db.migrate()
        downgrade_to(db, "0010")
        with db.engine.begin() as conn:
            conn.execute(runs.insert(), [run_row(utcnow())])
            conn.execute(run_logs.insert(), [
                {"run_id": 1, "at": utcnow(), "level": "INFO", "message": "kept"}])
        with pytest.raises(MigrationError, match="foreign keys are on"):
            upgrade_to(db, "0011")  # the engine's connections turn them on
        assert unique_fire(db) == "constraint"
        assert len(all_rows(db)[run_logs.name]) == 1
    finally:
        db.dispose()
