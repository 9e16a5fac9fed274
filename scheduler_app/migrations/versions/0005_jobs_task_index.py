"""One task's jobs in list order: ``ix_scheduler_jobs_task_next_run (task, next_run_time, id)``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03

``GET /api/jobs?task=reports.build`` is the job list's two range scans (scheduled jobs by next
run time and id, then paused ones by id) for one task. With only ``ix_scheduler_jobs_task
(task)`` the database found that task's jobs and sorted them (about 2 ms for 3,300 jobs); now
both scans follow the index in order. It replaces ``ix_scheduler_jobs_task``, its prefix: every
query by task reads the new index as it read the old one.

Safe for a rolling deploy: only indexes are added and dropped, which changes which index a
query of the previous code reads, never its result. Building the index reads the job table once.
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_scheduler_jobs_task_next_run", "scheduler_jobs",
                    ["task", "next_run_time", "id"])
    op.drop_index("ix_scheduler_jobs_task", table_name="scheduler_jobs")


def downgrade() -> None:
    op.create_index("ix_scheduler_jobs_task", "scheduler_jobs", ["task"])
    op.drop_index("ix_scheduler_jobs_task_next_run", table_name="scheduler_jobs")
