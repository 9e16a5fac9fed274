"""Revision 0005 (one task's jobs in list order) on a database with jobs in it, on SQLite and
PostgreSQL: the index replaces ``ix_scheduler_jobs_task``, every row is kept, and the
downgrade restores 0004's index."""

from __future__ import annotations

import sqlalchemy as sa

from scheduler_app.store import Database
from scheduler_app.store.schema import jobs
from scheduler_app.timeutil import utcnow
from tests.test_migrations import downgrade_to, upgrade_to


def job_indexes(db: Database) -> dict[str, list[str]]:
    return {ix["name"]: list(ix["column_names"])
            for ix in sa.inspect(db.engine).get_indexes("scheduler_jobs")
            if ix["name"] is not None}


def test_0005_indexes_jobs_by_task_in_list_order(db: Database) -> None:
    db.migrate()
    downgrade_to(db, "0004")  # 0004 itself is reached with SQLite's foreign keys off
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(jobs.insert(), [
            {"id": f"j{i}", "task": "demo.echo", "spec": {"task": "demo.echo"},
             "next_run_time": None if i % 2 else now.timestamp() + i, "version": 1,
             "created_at": now, "updated_at": now} for i in range(6)])
    assert job_indexes(db)["ix_scheduler_jobs_task"] == ["task"]

    upgrade_to(db, "0005")
    found = job_indexes(db)
    assert found["ix_scheduler_jobs_task_next_run"] == ["task", "next_run_time", "id"]
    assert "ix_scheduler_jobs_task" not in found
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar() == 6

    downgrade_to(db, "0004")
    found = job_indexes(db)
    assert found["ix_scheduler_jobs_task"] == ["task"]
    assert "ix_scheduler_jobs_task_next_run" not in found
