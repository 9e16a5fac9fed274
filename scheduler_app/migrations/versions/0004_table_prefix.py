"""Every table, index and constraint of the service gets the prefix ``scheduler_``.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-27

The service lives in its host app's database, and the host app may well have its own ``jobs``
or ``runs`` table (and on PostgreSQL an ``ix_runs_task`` index or a ``runs_id_seq`` sequence:
those names are schema-wide). Renamed, every row kept.

Not safe for a rolling deploy: the previous code cannot run on the renamed tables. Stop every
node, upgrade, then start the new code.

PostgreSQL renames everything in place, including the names it gave the primary and foreign
keys and the id sequences. SQLite renames the tables (their foreign keys follow), drops and
re-creates the indexes, and copies the runs table once to rename its unique constraint, which
lives in the table's definition. That copy needs foreign keys off, or dropping the old copy
would delete every run's log lines: ``Database.migrate`` turns them off, and the revision
refuses to run with them on. That copy and the index rebuilds took 5 s for 200,000 runs (with
a log line each) on SQLite, inside the migration's lock; on PostgreSQL every step only renames.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PREFIX = "scheduler_"
# As 0003 left them: every table, and each index's table and columns.
TABLES = ("runs", "run_logs", "jobs", "nodes", "stats", "misfire_marks")
INDEXES = {
    "ix_runs_state_due": ("runs", ["state", "scheduled_for"]),
    "ix_runs_state_id": ("runs", ["state", "id"]),
    "ix_runs_task": ("runs", ["task", "id"]),
    "ix_runs_job": ("runs", ["job_id", "id"]),
    "ix_runs_node_state": ("runs", ["node", "state"]),
    "ix_runs_finished": ("runs", ["finished_at"]),
    "ix_run_logs_run": ("run_logs", ["run_id", "id"]),
    "ix_jobs_next_run": ("jobs", ["next_run_time", "id"]),
    "ix_jobs_task": ("jobs", ["task"]),
}
UNIQUE = "uq_runs_job_fire"
UNIQUE_COLUMNS = ["job_id", "fire_time"]
# The names PostgreSQL chose for what the earlier revisions left unnamed.
PG_CONSTRAINTS = {"runs": ["runs_pkey", UNIQUE], "run_logs": ["run_logs_pkey",
                  "run_logs_run_id_fkey"], "jobs": ["jobs_pkey"], "nodes": ["nodes_pkey"],
                  "stats": ["stats_pkey"], "misfire_marks": ["misfire_marks_pkey"]}
PG_SEQUENCES = ("runs_id_seq", "run_logs_id_seq")


def upgrade() -> None:
    _rename(prefixed=True)


def downgrade() -> None:
    _rename(prefixed=False)


def _name(name: str, prefixed: bool) -> str:
    """``name`` as 0003 left it, or with the prefix (after ``ix_`` or ``uq_`` if it has one)."""
    if not prefixed:
        return name
    kind, _, rest = name.partition("_")
    return f"{kind}_{PREFIX}{rest}" if kind in ("ix", "uq") else PREFIX + name


def _rename(prefixed: bool) -> None:
    """Move every name from its form before ``prefixed`` to its form after."""
    def old(name: str) -> str:
        return _name(name, not prefixed)

    def new(name: str) -> str:
        return _name(name, prefixed)

    if op.get_bind().dialect.name == "postgresql":
        for table in TABLES:
            op.rename_table(old(table), new(table))
        for index in INDEXES:
            op.execute(f"ALTER INDEX {old(index)} RENAME TO {new(index)}")
        for table, constraints in PG_CONSTRAINTS.items():
            for constraint in constraints:
                op.execute(f"ALTER TABLE {new(table)} RENAME CONSTRAINT {old(constraint)} "
                           f"TO {new(constraint)}")
        for sequence in PG_SEQUENCES:
            op.execute(f"ALTER SEQUENCE {old(sequence)} RENAME TO {new(sequence)}")
        return

    if op.get_bind().exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise RuntimeError("SQLite's foreign keys are on: copying the runs table would delete "
                           "every run's log lines (Database.migrate turns them off)")
    for index, (table, _) in INDEXES.items():
        op.drop_index(old(index), table_name=old(table))
    for table in TABLES:
        op.rename_table(old(table), new(table))
    with op.batch_alter_table(new("runs"), recreate="always") as batch:
        batch.drop_constraint(old(UNIQUE), type_="unique")
        batch.create_unique_constraint(new(UNIQUE), UNIQUE_COLUMNS)
    for index, (table, columns) in INDEXES.items():
        op.create_index(new(index), new(table), columns)
