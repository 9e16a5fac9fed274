"""The service's tables, in SQLAlchemy Core: the schema this code expects now, every name
starting with ``TABLE_PREFIX``. ``scheduler_app/migrations`` is how a database gets there: a
change here needs a new revision there (a test compares the two). Why these names and types:
docs/ARCHITECTURE.md, "The store".
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from ..tasks.controls import KEY_COLUMN_LENGTH

TABLE_PREFIX = "scheduler_"

metadata = sa.MetaData()

# A run is active while queued or running (``lifecycle.ACTIVE_STATES``; spelled here as SQL
# because a partial index's predicate must be a literal the database can match a query to).
ACTIVE_PREDICATE = sa.text("state IN ('queued', 'running')")
# The queue by due time (``ix_scheduler_runs_state_due``) holds only queued runs: its queries
# name the state as this literal, not as a bound value. SQLite plans with the value bound and
# uses the index either way, but a PostgreSQL generic plan cannot prove that ``state = $1``
# matches the index and reads another one (every queued run) or the table.
QUEUED_LITERAL = "state = 'queued'"


def _present(column: str) -> dict[str, Any]:
    """A partial index's options: only the rows where ``column`` is not NULL."""
    where = sa.text(f"{column} IS NOT NULL")
    return {"sqlite_where": where, "postgresql_where": where}


BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timestamp that goes in and comes out as an aware UTC datetime on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def bind_processor(self, dialect: Dialect) -> Any:
        """On SQLite, straight to the text SQLAlchemy's ``DATETIME`` stores
        (``2026-12-04 13:10:53.906193``, microseconds always written, so that the stored
        times compare as text in time order), in one C call: a run's insert, claim and settle
        bind five times between them. Elsewhere as ``process_bind_param`` says."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def to_text(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is UTC:  # most are (utcnow): its text without "+00:00"
                return value.isoformat(" ", "microseconds")[:-6]
            if value.tzinfo is None:
                raise ValueError("naive datetime given to the database")
            return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
        return to_text

    def result_processor(self, dialect: Dialect, coltype: Any) -> Any:
        """On SQLite, the stored text parsed by one C call and handed to
        ``process_result_value``, not through the decorator's wrapper around the impl's
        processor: a claimed run reads three of them, a settle one more."""
        if dialect.name != "sqlite":
            return super().result_processor(dialect, coltype)

        def from_text(value: str | None) -> datetime | None:
            if value is None:
                return None
            return self.process_result_value(datetime.fromisoformat(value), dialect)
        return from_text

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        moment: datetime = value
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)


runs = sa.Table(
    f"{TABLE_PREFIX}runs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("task", sa.String(200), nullable=False),
    sa.Column("kwargs", sa.JSON, nullable=False),
    sa.Column("job_id", sa.String(191), nullable=True),
    # The job's scheduled fire time this run stands for; with job_id it is the unique key that
    # turns one fire into at most one run, whatever the job store's leases do.
    sa.Column("fire_time", UTCDateTime, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer, nullable=False, default=1),
    sa.Column("max_attempts", sa.Integer, nullable=False, default=1),
    sa.Column("retry_backoff", sa.Float, nullable=False, default=2.0),
    sa.Column("timeout", sa.Float, nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("progress_done", sa.Float, nullable=True),
    sa.Column("progress_total", sa.Float, nullable=True),
    sa.Column("progress_message", sa.Text, nullable=True),
    sa.Column("result", sa.JSON, nullable=True),
    sa.Column("error", sa.JSON, nullable=True),
    sa.Column("errors", sa.JSON, nullable=False, default=list),
    sa.Column("node", sa.String(200), nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("scheduled_for", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    # Concurrency controls (revision 0008; NULL: none). At most one active run per unique key
    # (the partial unique index below); at most ``concurrency_limit`` running runs per
    # concurrency key and ``rate_limit`` (``100/m``) starts per rate key, held by the claim.
    sa.Column("unique_key", sa.String(KEY_COLUMN_LENGTH), nullable=True),
    sa.Column("concurrency_key", sa.String(KEY_COLUMN_LENGTH), nullable=True),
    sa.Column("concurrency_limit", sa.Integer, nullable=True),
    sa.Column("rate_limit", sa.String(16), nullable=True),
    sa.Column("rate_key", sa.String(KEY_COLUMN_LENGTH), nullable=True),
    # Set by a claim that left this due run queued for want of a rate slot: when the next slot
    # opens, so the claims until then pass it over without counting, and its view can say so.
    sa.Column("throttled_until", UTCDateTime, nullable=True),
    # One run per job and fire time, over the runs a job fired only (revision 0011: a run
    # without a job, most of them, never clashes there, and no longer has an entry to write).
    sa.Index(f"uq_{TABLE_PREFIX}runs_job_fire", "job_id", "fire_time", unique=True,
             **_present("job_id")),
    # Queued runs by due time, the claims' and the dispatchers' order (revision 0009: queued
    # runs only, so a run's settle and a run written already started never touch it).
    sa.Index(f"ix_{TABLE_PREFIX}runs_state_due", "state", "scheduled_for",
             sqlite_where=sa.text(QUEUED_LITERAL), postgresql_where=sa.text(QUEUED_LITERAL)),
    # Runs in one state, newest first (GET /api/runs?state=failed): a seek, not a sort of
    # every run in that state.
    sa.Index(f"ix_{TABLE_PREFIX}runs_state_id", "state", "id"),
    sa.Index(f"ix_{TABLE_PREFIX}runs_task", "task", "id"),
    # These three hold only the rows with a value in their first column (revision 0009): every
    # query reading them asks for a value, and most runs have no job, no concurrency key, and
    # no finish time while active, so their writes skip them.
    sa.Index(f"ix_{TABLE_PREFIX}runs_job", "job_id", "id", **_present("job_id")),
    # No index of a node's running runs (revision 0012 dropped ix_scheduler_runs_node_state):
    # the looks for them (a tick's for cancels, the lost runs') name the state as a literal
    # (``IS_RUNNING``) and seek ix_scheduler_runs_state_id to the running runs, never more than
    # the cluster's threads; every run's write and settle had an entry there to write.
    sa.Index(f"ix_{TABLE_PREFIX}runs_finished", "finished_at", **_present("finished_at")),
    # One queued or running run per unique key, held by the database itself: the key frees
    # however the run leaves those states (finished, failed, cancelled, settled NodeLost).
    sa.Index(f"uq_{TABLE_PREFIX}runs_unique_active", "unique_key", unique=True,
             sqlite_where=ACTIVE_PREDICATE, postgresql_where=ACTIVE_PREDICATE),
    # Runs of a concurrency key by state (the claim counts the running ones per key).
    sa.Index(f"ix_{TABLE_PREFIX}runs_concurrency", "concurrency_key", "state",
             **_present("concurrency_key")),
)

# The runs table's JSON columns, and every column with those as the text stored (``CAST … AS
# TEXT``), for a reader that decodes them itself after its transaction (a claim, an alert's
# claim): a row changed by hand so that one is not JSON would otherwise fail the statement's
# whole result inside the transaction, taking every other row and write of it along.
RUN_JSON_COLUMNS = frozenset(c.key for c in runs.c if isinstance(c.type, sa.JSON))
RUN_COLUMNS_AS_STORED = tuple(sa.cast(c, sa.Text).label(c.key) if c.key in RUN_JSON_COLUMNS
                              else c for c in runs.c)

# ``runs.state = 'queued'`` (and ``'running'``) with the state as a literal: see QUEUED_LITERAL.
IS_QUEUED = runs.c.state == sa.literal_column("'queued'")
IS_RUNNING = runs.c.state == sa.literal_column("'running'")
# Queued or running (``ACTIVE_PREDICATE``), the same way: counted at every /metrics scrape.
IS_ACTIVE = runs.c.state.in_([sa.literal_column("'queued'"), sa.literal_column("'running'")])

run_logs = sa.Table(
    f"{TABLE_PREFIX}run_logs",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", BigId, sa.ForeignKey(runs.c.id, ondelete="CASCADE"), nullable=False),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("level", sa.String(10), nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Index(f"ix_{TABLE_PREFIX}run_logs_run", "run_id", "id"),
)

jobs = sa.Table(
    f"{TABLE_PREFIX}jobs",
    metadata,
    sa.Column("id", sa.String(191), primary_key=True),
    sa.Column("task", sa.String(200), nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    # Seconds since the epoch, NULL while paused: the scheduler's due-job query is one index scan.
    sa.Column("next_run_time", sa.Float, nullable=True),
    # Bumped by every write, so a writer holding an old copy can be detected (compare-and-set).
    sa.Column("version", sa.Integer, nullable=False, default=1),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    # Due jobs, the next fire time, and the job list's order (next run time, then id).
    sa.Index(f"ix_{TABLE_PREFIX}jobs_next_run", "next_run_time", "id"),
    # The same order for one task's jobs (GET /api/jobs?task=...).
    sa.Index(f"ix_{TABLE_PREFIX}jobs_task_next_run", "task", "next_run_time", "id"),
)

nodes = sa.Table(
    f"{TABLE_PREFIX}nodes",
    metadata,
    sa.Column("id", sa.String(200), primary_key=True),
    sa.Column("host", sa.String(200), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
    sa.Column("stopped_at", UTCDateTime, nullable=True),
    sa.Column("running", sa.Integer, nullable=False, default=0),
    sa.Column("capacity", sa.Integer, nullable=False, default=0),
    # The names of the tasks this node executes (a JSON list), so a queued run whose task no
    # live node has can say so. NULL: the node executes nothing, or its code predates 0006.
    sa.Column("tasks", sa.JSON, nullable=True),
)


# When each run with a rate limit started an attempt, by rate key: the sliding window a claim
# counts (revision 0008). A run's own ``started_at`` is not enough: a retry or a hand-back
# overwrites it, and pruning deletes the run. Rows older than the longest period are pruned.
rate_starts = sa.Table(
    f"{TABLE_PREFIX}rate_starts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("rate_key", sa.String(KEY_COLUMN_LENGTH), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("run_id", BigId, nullable=False),
    sa.Index(f"ix_{TABLE_PREFIX}rate_starts_key", "rate_key", "started_at"),
)


# Cumulative totals behind /metrics, one row per (metric, task, label): ``label`` is a run's
# final state for ``runs_finished``, a bucket's upper bound (or ``sum``) for a histogram, empty
# for plain counters. Rows are only ever incremented.
stats = sa.Table(
    f"{TABLE_PREFIX}stats",
    metadata,
    sa.Column("metric", sa.String(64), primary_key=True),
    sa.Column("task", sa.String(200), primary_key=True),
    sa.Column("label", sa.String(32), primary_key=True),
    sa.Column("value", sa.Float, nullable=False),
)

# The latest missed fire counted per job (epoch seconds): every node may see the same missed
# fire, and only the one that moves this mark forward counts it.
misfire_marks = sa.Table(
    f"{TABLE_PREFIX}misfire_marks",
    metadata,
    sa.Column("job_id", sa.String(191), primary_key=True),
    sa.Column("fire_time", sa.Float, nullable=False),
)

# Webhook alerts, written in the same transaction as the end of the run they announce, so one is
# never lost with the node that settled the run; any live node posts them (``alerts.py``).
# ``event`` is the run's final state; ``state`` is ``pending`` until ``delivered`` or
# ``given_up``. A pending alert is due at ``next_attempt_at``; while a node posts it
# (``claimed_by``), that time is the end of the node's lease, after which another node may take
# it. Kept as long as the run it belongs to (pruning deletes both; a run whose alert is pending
# is not pruned).
alerts = sa.Table(
    f"{TABLE_PREFIX}alerts",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("run_id", BigId, sa.ForeignKey(runs.c.id, ondelete="CASCADE"), nullable=False),
    sa.Column("event", sa.String(16), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", UTCDateTime, nullable=False),
    sa.Column("claimed_by", sa.String(200), nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime, nullable=True),
    sa.UniqueConstraint("run_id", "event", name=f"uq_{TABLE_PREFIX}alerts_run_event"),
    # The pending alerts due now, oldest first: what every node's sender asks for.
    sa.Index(f"ix_{TABLE_PREFIX}alerts_due", "state", "next_attempt_at"),
)
