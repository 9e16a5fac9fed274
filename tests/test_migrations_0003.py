"""Revision 0003 (list indexes) on a database with data in it, on SQLite and PostgreSQL: the
indexes exist after the upgrade, every row is kept, and the downgrade restores 0002's."""

from __future__ import annotations

import sqlalchemy as sa

from scheduler_app.store import Database
from scheduler_app.timeutil import utcnow
from tests.test_migrations import LEGACY, downgrade_to, upgrade_to

# The tables under the names revisions 0001-0003 gave them.
runs, jobs = LEGACY.tables["runs"], LEGACY.tables["jobs"]



def indexes(db: Database, table: str) -> dict[str, list[str]]:
    return {ix["name"]: list(ix["column_names"]) for ix in sa.inspect(db.engine).get_indexes(table)
            if ix["name"] is not None}


def test_upgrade_to_0003_adds_the_list_indexes_and_keeps_rows(db: Database) -> None:
    upgrade_to(db, "0002")
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(runs.insert(), [
            {"task": "demo.echo", "kwargs": {}, "job_id": None, "fire_time": None,
             "state": state, "attempt": 1, "max_attempts": 1, "retry_backoff": 2.0,
             "timeout": None, "cancel_requested": False, "errors": [], "node": None,
             "created_at": now, "scheduled_for": now, "started_at": now, "finished_at": now}
            for state in ("succeeded", "failed", "cancelled") * 5])
        conn.execute(jobs.insert(), [
            {"id": f"j{i}", "task": "demo.echo", "spec": {"task": "demo.echo"},
             "next_run_time": now.timestamp() + i, "version": 1, "created_at": now,
             "updated_at": now} for i in range(5)])
    assert "ix_jobs_next_run_time" in indexes(db, "jobs")

    upgrade_to(db, "0003")
    assert indexes(db, "runs")["ix_runs_state_id"] == ["state", "id"]
    assert indexes(db, "jobs")["ix_jobs_next_run"] == ["next_run_time", "id"]
    assert "ix_jobs_next_run_time" not in indexes(db, "jobs")
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar() == 15
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar() == 5

    downgrade_to(db, "0002")
    assert "ix_runs_state_id" not in indexes(db, "runs")
    assert indexes(db, "jobs")["ix_jobs_next_run_time"] == ["next_run_time"]
    assert "ix_jobs_next_run" not in indexes(db, "jobs")
