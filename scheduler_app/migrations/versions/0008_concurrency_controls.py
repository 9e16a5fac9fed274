"""Concurrency controls: a run's unique key, concurrency key and limit, rate limit and key.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03

Five nullable columns on ``scheduler_runs`` carry a run's controls as it was enqueued, and
``throttled_until`` the time a rate-limited run may next start. ``uq_scheduler_runs_unique_active``
is a partial unique index over the unique key of queued and running runs only: the database
itself refuses a second active run with one key, and the key frees the moment its run leaves
those states, however it leaves them. ``ix_scheduler_runs_concurrency`` lets a claim count the
running runs of a concurrency key. ``scheduler_rate_starts`` records each start of a
rate-limited run by rate key, the sliding window a claim counts.

Safe for a rolling deploy: only nullable columns, indexes and a new table are added. The
previous code leaves the new columns NULL (no controls), which none of the new indexes
constrains, and never reads the new table. Building the indexes reads the runs table once.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ACTIVE = sa.text("state IN ('queued', 'running')")
KEY = 300


def upgrade() -> None:
    with op.batch_alter_table("scheduler_runs") as batch:
        batch.add_column(sa.Column("unique_key", sa.String(KEY), nullable=True))
        batch.add_column(sa.Column("concurrency_key", sa.String(KEY), nullable=True))
        batch.add_column(sa.Column("concurrency_limit", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("rate_limit", sa.String(16), nullable=True))
        batch.add_column(sa.Column("rate_key", sa.String(KEY), nullable=True))
        batch.add_column(sa.Column("throttled_until", sa.DateTime(timezone=True),
                                   nullable=True))
    op.create_index("uq_scheduler_runs_unique_active", "scheduler_runs", ["unique_key"],
                    unique=True, sqlite_where=ACTIVE, postgresql_where=ACTIVE)
    op.create_index("ix_scheduler_runs_concurrency", "scheduler_runs",
                    ["concurrency_key", "state"])
    op.create_table(
        "scheduler_rate_starts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
                  autoincrement=True),
        sa.Column("rate_key", sa.String(KEY), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
                  nullable=False),
    )
    op.create_index("ix_scheduler_rate_starts_key", "scheduler_rate_starts",
                    ["rate_key", "started_at"])


def downgrade() -> None:
    op.drop_index("ix_scheduler_rate_starts_key", table_name="scheduler_rate_starts")
    op.drop_table("scheduler_rate_starts")
    op.drop_index("ix_scheduler_runs_concurrency", table_name="scheduler_runs")
    op.drop_index("uq_scheduler_runs_unique_active", table_name="scheduler_runs")
    with op.batch_alter_table("scheduler_runs") as batch:
        for column in ("throttled_until", "rate_key", "rate_limit", "concurrency_limit",
                       "concurrency_key", "unique_key"):
            batch.drop_column(column)
