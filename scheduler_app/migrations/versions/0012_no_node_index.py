"""``ix_scheduler_runs_node_state`` is dropped: a node's running runs are found through
``ix_scheduler_runs_state_id``.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05

The index held the running runs by node (revision 0010). Its readers, a node's tick looking for
cancels and every node's look for runs left by a lost one, ask for the running runs with the
state as a literal; ``ix_scheduler_runs_state_id`` seeks to those as well, and there are never
more of them than the cluster has threads, so the node is a filter over a few rows. Meanwhile
every run paid for the index twice on its path: an entry written with the run-now insert or
the claim, and taken out by the settle, each inside the write lock. A run-now's insert and its
settle took 83.5 µs of SQLite's own work with the index and 72.9 without, in a hot loop
(bench/README.md).

Safe for a rolling deploy: no statement names the index; the previous code's looks (the state
bound, not a literal) read ``ix_scheduler_runs_state_id`` on SQLite and may read it or the
table on PostgreSQL, for a few rows, until those nodes are replaced.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

NAME = "ix_scheduler_runs_node_state"
RUNNING = "state = 'running'"


def upgrade() -> None:
    op.drop_index(NAME, table_name="scheduler_runs")


def downgrade() -> None:
    op.create_index(NAME, "scheduler_runs", ["node", "state"], sqlite_where=sa.text(RUNNING),
                    postgresql_where=sa.text(RUNNING))
