"""Cumulative run statistics for /metrics, and the per-job mark that counts a missed fire once.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26

New tables only: existing runs, logs, jobs and nodes are untouched. The totals start at zero
(runs finished before this revision are not back-filled: a counter that starts counting at the
upgrade is what Prometheus expects of a new counter).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stats",
        sa.Column("metric", sa.String(64), primary_key=True),
        sa.Column("task", sa.String(200), primary_key=True),
        sa.Column("label", sa.String(32), primary_key=True),
        sa.Column("value", sa.Float, nullable=False),
    )
    op.create_table(
        "misfire_marks",
        sa.Column("job_id", sa.String(191), primary_key=True),
        sa.Column("fire_time", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("misfire_marks")
    op.drop_table("stats")
