"""Revision 0008 (concurrency controls) on a database with runs in it, on SQLite and
PostgreSQL: the columns arrive NULL with the rows kept, the partial unique index holds one
active run per unique key from then on (and none among finished ones), and the downgrade
removes all of it with the rows still there."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from scheduler_app.store import Database
from scheduler_app.timeutil import utcnow
from tests.test_migrations import LEGACY, downgrade_to, upgrade_to

NEW_COLUMNS = ["unique_key", "concurrency_key", "concurrency_limit", "rate_limit", "rate_key",
               "throttled_until"]



def run_columns(db: Database) -> list[str]:
    return [c["name"] for c in sa.inspect(db.engine).get_columns("scheduler_runs")]


def old_run(run_id: int, state: str) -> dict[str, object]:
    now = utcnow()
    return {"id": run_id, "task": "demo.echo", "kwargs": {"value": run_id}, "job_id": None,
            "fire_time": None, "state": state, "attempt": 1, "max_attempts": 1,
            "retry_backoff": 2.0, "timeout": None, "cancel_requested": False,
            "progress_done": None, "progress_total": None, "progress_message": None,
            "result": None, "error": None, "errors": [], "node": None, "created_at": now,
            "scheduled_for": now, "started_at": None, "finished_at": None}


def insert(db: Database, run_id: int, state: str, unique_key: str) -> None:
    with db.engine.begin() as conn:
        conn.execute(sa.text(
            "INSERT INTO scheduler_runs (id, task, kwargs, state, attempt, max_attempts, "
            "retry_backoff, cancel_requested, errors, created_at, scheduled_for, unique_key) "
            "VALUES (:id, 'demo.echo', '{}', :state, 1, 1, 2.0, false, '[]', :now, :now, :key)"),
            {"id": run_id, "state": state, "now": utcnow(), "key": unique_key})


def test_0008_adds_the_controls_with_the_runs_kept_and_holds_unique_keys(db: Database) -> None:
    db.migrate()
    downgrade_to(db, "0007")
    assert not set(NEW_COLUMNS) & set(run_columns(db))
    assert "scheduler_rate_starts" not in sa.inspect(db.engine).get_table_names()
    old_runs = LEGACY.tables["runs"].to_metadata(sa.MetaData(), name="scheduler_runs")
    with db.engine.begin() as conn:
        conn.execute(old_runs.insert(), [old_run(1, "queued"), old_run(2, "succeeded")])

    upgrade_to(db, "0008")
    assert run_columns(db)[-len(NEW_COLUMNS):] == NEW_COLUMNS
    with db.engine.connect() as conn:
        rows = conn.execute(sa.text(
            f"SELECT id, state, {', '.join(NEW_COLUMNS)} FROM scheduler_runs ORDER BY id")).all()
    assert rows == [(1, "queued", *[None] * 6), (2, "succeeded", *[None] * 6)]
    assert "scheduler_rate_starts" in sa.inspect(db.engine).get_table_names()

    # Finished runs may share a key; only one queued or running run may hold it.
    insert(db, 10, "succeeded", "k")
    insert(db, 11, "failed", "k")
    insert(db, 12, "queued", "k")
    with pytest.raises(sa.exc.IntegrityError):
        insert(db, 13, "running", "k")
    insert(db, 14, "queued", "other")

    downgrade_to(db, "0007")
    assert not set(NEW_COLUMNS) & set(run_columns(db))
    assert "scheduler_rate_starts" not in sa.inspect(db.engine).get_table_names()
    with db.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT id FROM scheduler_runs ORDER BY id")
                            ).scalars().all() == [1, 2, 10, 11, 12, 14]
