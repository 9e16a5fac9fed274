"""Five run indexes hold only the rows they are read for: ``ix_scheduler_runs_job``,
``ix_scheduler_runs_concurrency``, ``ix_scheduler_runs_finished`` and
``ix_scheduler_runs_node_state`` become partial over the rows whose first column is not NULL,
and ``ix_scheduler_runs_state_due`` over the queued runs.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

Most runs have no job (run now, a batch), no concurrency key, and, while queued or running, no
finish time; a queued run has no node. Each such row still had an entry in those four indexes,
written with the row and moved at every change of its state, and every query reading them asks
for a value (``job_id = ?``, ``concurrency_key IN (...)``, ``finished_at < ?``, ``node = ?``),
which a NULL never matches. The queue by due time is read only for queued runs (the claims, the
next due time), and its queries name the state as a literal (``schema.IS_QUEUED``), so both
databases know its rows are all there; a settle and a run written already started no longer
touch it. A settle and the claim in its transaction write 11 pages of the write-ahead log
instead of 18 (bench/README.md).

Safe for a rolling deploy: only indexes are dropped and created under the same names, with the
same columns, so every query of the previous code finds what it found. The previous code's
claims name the queued state as a bound value: SQLite still reads the new queue index for them,
PostgreSQL may read ``ix_scheduler_runs_state_id`` instead (every queued run, not only the due
ones) until those nodes are replaced. Building the indexes reads the runs table once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

# (name, columns, the rows it keeps).
INDEXES = (
    ("ix_scheduler_runs_job", ["job_id", "id"], "job_id IS NOT NULL"),
    ("ix_scheduler_runs_concurrency", ["concurrency_key", "state"],
     "concurrency_key IS NOT NULL"),
    ("ix_scheduler_runs_finished", ["finished_at"], "finished_at IS NOT NULL"),
    ("ix_scheduler_runs_node_state", ["node", "state"], "node IS NOT NULL"),
    ("ix_scheduler_runs_state_due", ["state", "scheduled_for"], "state = 'queued'"),
)


def upgrade() -> None:
    for name, columns, kept in INDEXES:
        where = sa.text(kept)
        op.drop_index(name, table_name="scheduler_runs")
        op.create_index(name, "scheduler_runs", columns, sqlite_where=where,
                        postgresql_where=where)


def downgrade() -> None:
    for name, columns, _ in INDEXES:
        op.drop_index(name, table_name="scheduler_runs")
        op.create_index(name, "scheduler_runs", columns)
