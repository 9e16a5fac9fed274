"""``uq_scheduler_runs_job_fire`` holds only the runs a job fired: a partial unique index over
the rows with a job, where it was a unique constraint over every run.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05

The constraint keeps one run per job and fire time. A run without a job (run now, a batch,
``Task.enqueue``) can never clash there (NULLs are distinct), yet each one had an entry in the
constraint's index, written inside the write lock with the row: one B-tree of the six a run-now
insert touched and one page of the write-ahead log; ``BEGIN``, the insert and ``COMMIT`` took
47.0 µs of SQLite's work with it and 42.4 without, in a hot loop (bench/README.md). The index
over the rows with a job keeps exactly the same guarantee.

Safe for a rolling deploy: uniqueness holds for the same rows under the same name, and no
statement names the constraint (the fire pass looks the recorded fires up first; the constraint
is its backstop). PostgreSQL drops the constraint and builds the index in one transaction.
SQLite keeps a table constraint in the table's definition, so the runs table is copied once
without it (SQLite's own procedure: the new table, the rows, the old one dropped, the new one
renamed, every index made again from its own SQL); that needs foreign keys off, or dropping the
old copy would delete every run's log lines: ``Database.migrate`` turns them off and this
revision refuses to run with them on. The copy holds the migration's lock while it runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import sqlalchemy as sa
from alembic import op

from scheduler_app.migrations import MigrationError

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TABLE = "scheduler_runs"
NAME = "uq_scheduler_runs_job_fire"
COLUMNS = ["job_id", "fire_time"]
KEPT = "job_id IS NOT NULL"
# The constraint as ``CREATE TABLE`` has it (sqlite_master keeps the table's SQL as written).
CONSTRAINT = f"CONSTRAINT {NAME} UNIQUE (job_id, fire_time)"
_CONSTRAINT_CLAUSE = re.compile(r",\s*CONSTRAINT\s+" + NAME + r"\s+UNIQUE\s*\(\s*job_id\s*,"
                                r"\s*fire_time\s*\)", re.IGNORECASE)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(NAME, TABLE, type_="unique")
        op.create_index(NAME, TABLE, COLUMNS, unique=True, postgresql_where=sa.text(KEPT))
        return
    _copy_runs_table(_without_constraint)
    op.create_index(NAME, TABLE, COLUMNS, unique=True, sqlite_where=sa.text(KEPT))


def downgrade() -> None:
    op.drop_index(NAME, table_name=TABLE)
    if op.get_bind().dialect.name == "postgresql":
        op.create_unique_constraint(NAME, TABLE, COLUMNS)
        return
    _copy_runs_table(_with_constraint)


def _without_constraint(sql: str) -> str:
    changed, found = _CONSTRAINT_CLAUSE.subn("", sql)
    if found != 1:
        raise MigrationError(f"{TABLE}'s definition has no {CONSTRAINT} to take out: {sql}")
    return changed


def _with_constraint(sql: str) -> str:
    end = sql.rstrip().rfind(")")
    if end < 0 or _CONSTRAINT_CLAUSE.search(sql):
        raise MigrationError(f"{TABLE}'s definition cannot take {CONSTRAINT} back: {sql}")
    return f"{sql[:end].rstrip()}, \n\t{CONSTRAINT}\n)"


def _copy_runs_table(definition: Callable[[str], str]) -> None:
    """Copy SQLite's runs table to one whose ``CREATE TABLE`` is ``definition`` of the current
    one, under the same name, with every row and every index as it was."""
    conn = op.get_bind()
    if conn.exec_driver_sql("PRAGMA foreign_keys").scalar():
        raise MigrationError("SQLite's foreign keys are on: copying the runs table would "
                             "delete every run's log lines (Database.migrate turns them off)")
    (table_sql,) = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (TABLE,)).one()
    # Every index but the ones SQLite makes itself for constraints (no SQL of their own).
    indexes = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = ? "
        "AND sql IS NOT NULL", (TABLE,)).scalars().all()
    copy = f"{TABLE}_0011"
    new_sql = definition(table_sql)
    head = re.match(r"\s*CREATE\s+TABLE\s+\"?" + TABLE + r"\"?\s*\(", new_sql, re.IGNORECASE)
    if head is None:
        raise MigrationError(f"unexpected definition of {TABLE}: {table_sql}")
    conn.exec_driver_sql(f"CREATE TABLE {copy} (" + new_sql[head.end():])
    columns = ", ".join(f'"{row[1]}"' for row in conn.exec_driver_sql(
        f"PRAGMA table_info({TABLE})"))
    conn.exec_driver_sql(f"INSERT INTO {copy} ({columns}) SELECT {columns} FROM {TABLE}")
    conn.exec_driver_sql(f"DROP TABLE {TABLE}")
    conn.exec_driver_sql(f"ALTER TABLE {copy} RENAME TO {TABLE}")
    for sql in indexes:
        conn.exec_driver_sql(sql)

