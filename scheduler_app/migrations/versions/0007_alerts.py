"""Webhook alerts kept in the database: ``scheduler_alerts``, one row per alert.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03

An alert used to wait in memory on the node that settled its run, and was lost if that node
was killed. Its row is now written in the same transaction as the run's end, and any live node
posts it, claiming it with a lease (``claimed_by``, ``next_attempt_at``) so two live nodes never
post it at once.

Safe for a rolling deploy: a new table only. The previous code neither reads nor writes it (its
nodes keep sending the alerts of the runs they settle from memory, as before).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

# Written out, not imported from store/schema.py: a revision is a snapshot (see 0001).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scheduler_alerts",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", BigId, sa.ForeignKey("scheduler_runs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("event", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", Time, nullable=False),
        sa.Column("claimed_by", sa.String(200), nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("finished_at", Time, nullable=True),
        sa.UniqueConstraint("run_id", "event", name="uq_scheduler_alerts_run_event"),
    )
    op.create_index("ix_scheduler_alerts_due", "scheduler_alerts", ["state", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_scheduler_alerts_due", table_name="scheduler_alerts")
    op.drop_table("scheduler_alerts")
