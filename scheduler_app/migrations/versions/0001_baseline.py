"""Baseline: the schema as ``metadata.create_all`` made it before there were migrations.

Revision ID: 0001
Revises:
Create Date: 2026-11-26

A database created by that older code has exactly these tables and is stamped here, not
re-created (``scheduler_app.migrations.upgrade``). Written out in full rather than imported from
``store/schema.py``: a revision is a snapshot, and must not change when the schema module does.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# As in store/schema.py: BIGINT keys, except SQLite's INTEGER PRIMARY KEY (its rowid).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Time = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("kwargs", sa.JSON, nullable=False),
        sa.Column("job_id", sa.String(191), nullable=True),
        sa.Column("fire_time", Time, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("retry_backoff", sa.Float, nullable=False),
        sa.Column("timeout", sa.Float, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False),
        sa.Column("progress_done", sa.Float, nullable=True),
        sa.Column("progress_total", sa.Float, nullable=True),
        sa.Column("progress_message", sa.Text, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("errors", sa.JSON, nullable=False),
        sa.Column("node", sa.String(200), nullable=True),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("scheduled_for", Time, nullable=False),
        sa.Column("started_at", Time, nullable=True),
        sa.Column("finished_at", Time, nullable=True),
        sa.UniqueConstraint("job_id", "fire_time", name="uq_runs_job_fire"),
    )
    op.create_index("ix_runs_state_due", "runs", ["state", "scheduled_for"])
    op.create_index("ix_runs_task", "runs", ["task", "id"])
    op.create_index("ix_runs_job", "runs", ["job_id", "id"])
    op.create_index("ix_runs_node_state", "runs", ["node", "state"])
    op.create_index("ix_runs_finished", "runs", ["finished_at"])

    op.create_table(
        "run_logs",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("run_id", BigId, sa.ForeignKey("runs.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("at", Time, nullable=False),
        sa.Column("level", sa.String(10), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_run_logs_run", "run_logs", ["run_id", "id"])

    op.create_table(
        "jobs",
        sa.Column("id", sa.String(191), primary_key=True),
        sa.Column("task", sa.String(200), nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("next_run_time", sa.Float, nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("created_at", Time, nullable=False),
        sa.Column("updated_at", Time, nullable=False),
    )
    op.create_index("ix_jobs_next_run_time", "jobs", ["next_run_time"])
    op.create_index("ix_jobs_task", "jobs", ["task"])

    op.create_table(
        "nodes",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("host", sa.String(200), nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("started_at", Time, nullable=False),
        sa.Column("heartbeat_at", Time, nullable=False),
        sa.Column("stopped_at", Time, nullable=True),
        sa.Column("running", sa.Integer, nullable=False),
        sa.Column("capacity", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("nodes")
    op.drop_table("jobs")
    op.drop_table("run_logs")
    op.drop_table("runs")
