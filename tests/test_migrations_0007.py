"""Revision 0007 (alerts kept in the database) on a database with a run in it, on SQLite and
PostgreSQL: the table is added empty beside the kept rows, takes an alert of the run, and the
downgrade removes it (with its rows) and leaves the run alone."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from scheduler_app.store import Database
from scheduler_app.store.schema import alerts, runs
from scheduler_app.timeutil import utcnow
from tests.test_migrations import downgrade_to, legacy_run_rows, schema_diff, upgrade_to


def tables(db: Database) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names())


def test_0007_adds_the_alerts_table(db: Database) -> None:
    db.migrate()
    downgrade_to(db, "0006")
    assert "scheduler_alerts" not in tables(db)
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(runs.insert(), legacy_run_rows(now))
        run_ids = conn.execute(sa.select(runs.c.id).order_by(runs.c.id)).scalars().all()

    upgrade_to(db, "0007")
    assert "scheduler_alerts" in tables(db)
    # Exactly the schema module's table, index and constraint (what later revisions add to
    # other tables is not here yet).
    assert [d for d in schema_diff(db) if "scheduler_alerts" in repr(d)] == []
    with db.engine.begin() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(alerts)).scalar() == 0
        conn.execute(alerts.insert(), [{
            "run_id": run_ids[0], "event": "failed", "state": "pending", "attempts": 0,
            "next_attempt_at": now, "created_at": now}])
        with pytest.raises(sa.exc.IntegrityError), conn.begin_nested():  # one per (run, event)
            conn.execute(alerts.insert(), [{
                "run_id": run_ids[0], "event": "failed", "state": "pending", "attempts": 0,
                "next_attempt_at": now, "created_at": now}])
        assert conn.execute(sa.select(alerts.c.run_id, alerts.c.state)).all() == [
            (run_ids[0], "pending")]

    downgrade_to(db, "0006")
    assert "scheduler_alerts" not in tables(db)
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(runs.c.id).order_by(runs.c.id)).scalars().all() == run_ids
