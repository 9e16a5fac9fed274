"""Indexes for listing at scale: runs by state newest first, jobs by next run time then id.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26

- ``ix_runs_state_id (state, id)``: ``GET /api/runs?state=failed`` is ``WHERE state = ? ORDER BY
  id DESC LIMIT 50``. With only ``ix_runs_state_due (state, scheduled_for)`` SQLite read every
  run in that state and sorted them: 390 ms with 80,000 failed runs among 1,000,000
  (bench/scale.py). Now a seek to the state's newest entry.
- ``ix_jobs_next_run (next_run_time, id)`` replaces ``ix_jobs_next_run_time (next_run_time)``,
  its prefix: the job list pages in this order, and the due-job and next-fire queries use it as
  they used the old one. Dropping the old index cannot break code still running the previous
  revision (a rolling deploy): it only changes which index a query reads.

Building ``ix_runs_state_id`` reads the runs table once (under a second for a million runs on
SQLite), inside the migration's lock.
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_state_id", "runs", ["state", "id"])
    op.create_index("ix_jobs_next_run", "jobs", ["next_run_time", "id"])
    op.drop_index("ix_jobs_next_run_time", table_name="jobs")


def downgrade() -> None:
    op.create_index("ix_jobs_next_run_time", "jobs", ["next_run_time"])
    op.drop_index("ix_jobs_next_run", table_name="jobs")
    op.drop_index("ix_runs_state_id", table_name="runs")
