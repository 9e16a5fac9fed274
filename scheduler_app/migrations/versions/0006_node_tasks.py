"""Each node's row says which tasks it executes: ``scheduler_nodes.tasks``, a JSON list.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03

A node claims only runs of the tasks registered in its process; a run whose task no live node
has stays queued, and its view says so ("no live node has task 'reports.build'"). The column is
what the view reads. NULL for a node that executes nothing, and for nodes of the previous code
during a rolling deploy, which may claim any task.

Safe for a rolling deploy: one nullable column added; the previous code neither reads nor
writes it.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("scheduler_nodes", sa.Column("tasks", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("scheduler_nodes") as batch:
        batch.drop_column("tasks")
