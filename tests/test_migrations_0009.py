"""Revision 0009 (five run indexes partial: four over the rows with a value, the queue by due
time over the queued runs) on a database with runs
in it, on SQLite and PostgreSQL: the indexes keep their names and columns and leave out the
rows whose first column is NULL, every row is kept, the queries that read them still do, and
the downgrade restores 0008's full indexes."""

from __future__ import annotations

import sqlalchemy as sa

from scheduler_app.store import Database
from scheduler_app.store.schema import runs
from scheduler_app.timeutil import utcnow
from tests.test_migrations import downgrade_to, index_definitions, run_row, upgrade_to

# The five indexes, their columns and the rows each keeps.
INDEXES = (
    ("ix_scheduler_runs_job", ["job_id", "id"], "job_id IS NOT NULL"),
    ("ix_scheduler_runs_concurrency", ["concurrency_key", "state"],
     "concurrency_key IS NOT NULL"),
    ("ix_scheduler_runs_finished", ["finished_at"], "finished_at IS NOT NULL"),
    ("ix_scheduler_runs_node_state", ["node", "state"], "node IS NOT NULL"),
    ("ix_scheduler_runs_state_due", ["state", "scheduled_for"], "state = 'queued'"),
)


def definitions(db: Database) -> dict[str, str]:
    """Each of the five indexes' SQL as the database keeps it."""
    return index_definitions(db, [name for name, _, _ in INDEXES])


def test_0009_makes_four_run_indexes_partial(db: Database) -> None:
    db.migrate()
    downgrade_to(db, "0008")
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(runs.insert(), [
            run_row(now, state="queued" if i % 2 else "succeeded",
                    job_id="nightly" if i % 3 == 0 else None,
                    concurrency_key="k" if i == 4 else None,
                    node=None if i % 2 else "n1", finished_at=None if i % 2 else now)
            for i in range(6)])
    before = definitions(db)
    assert len(before) == 5 and not any(" WHERE " in sql for sql in before.values()), before

    upgrade_to(db, "0009")
    after = definitions(db)
    for name, columns, kept in INDEXES:
        sql = after[name].replace("(", "").replace(")", "").replace("::text", "")
        assert f"WHERE {kept}" in sql, sql
        assert all(column in sql for column in columns), sql
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar() == 6
    downgrade_to(db, "0008")
    assert not any(" WHERE " in sql for sql in definitions(db).values())
    assert len(definitions(db)) == 5
