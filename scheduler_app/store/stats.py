"""Cumulative run statistics behind ``/metrics``, kept in the database so every node reports
the same totals: ``Tally`` adds to them in the transaction of the change it counts, and
``StatsStore.snapshot`` reads them with the gauges. Why: docs/ARCHITECTURE.md, "The store".
"""

from __future__ import annotations

import bisect
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ..timeutil import utcnow
from .db import Database
from .driver import Prepared
from .schema import IS_ACTIVE, alerts, jobs, misfire_marks, nodes, runs, stats

RUNS_FINISHED = "runs_finished"
RUN_DURATION = "run_duration_seconds"
QUEUE_WAIT = "run_queue_wait_seconds"
MISFIRES = "misfires"
NODE_LOST = "node_lost"
DEDUPLICATED = "runs_deduplicated"
THROTTLED = "runs_throttled"

# Upper bounds in seconds. Runs last from milliseconds to hours; a queue wait is short unless
# the cluster is saturated or down.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0,
                    3600.0, 10800.0)
QUEUE_WAIT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                      3600.0)
HISTOGRAMS: Mapping[str, tuple[float, ...]] = {
    RUN_DURATION: DURATION_BUCKETS, QUEUE_WAIT: QUEUE_WAIT_BUCKETS}
SUM = "sum"

_Key = tuple[str, str, str]  # (metric, task, label)


def bound_label(bound: float) -> str:
    """How a bucket's upper bound is stored: ``0.5``, ``10``, ``+Inf``."""
    return "+Inf" if math.isinf(bound) else format(bound, "g")


# Each histogram's bucket labels in its bounds' order, ``+Inf`` last: an observation inside a
# settle's or a claim's transaction looks its label up instead of formatting it.
_LABELS: Mapping[str, tuple[str, ...]] = {
    metric: (*map(bound_label, bounds), bound_label(math.inf))
    for metric, bounds in HISTOGRAMS.items()}


class Tally:
    """The increments of one transaction, written by ``flush`` in one statement.

    Rows are written in key order, so two transactions bumping overlapping rows on PostgreSQL
    lock them in the same order and cannot deadlock each other.
    """

    def __init__(self) -> None:
        self._values: dict[_Key, float] = {}

    def _add(self, metric: str, task: str, label: str, amount: float) -> None:
        key = (metric, task, label)
        self._values[key] = self._values.get(key, 0.0) + amount

    def finished(self, task: str, state: str) -> None:
        """A run reached a final state."""
        self._add(RUNS_FINISHED, task, state, 1)

    def misfire(self, task: str) -> None:
        """A job's fire was missed (later than its misfire grace time)."""
        self._add(MISFIRES, task, "", 1)

    def node_lost(self, task: str) -> None:
        """An attempt was settled as ``NodeLost`` (its node stopped heartbeating)."""
        self._add(NODE_LOST, task, "", 1)

    def deduplicated(self, task: str) -> None:
        """A run was not made because an active run holds its unique key (an enqueue answered
        ``already_queued``, or a job's fire skipped)."""
        self._add(DEDUPLICATED, task, "", 1)

    def throttled(self, task: str) -> None:
        """A due run was left queued by a claim because its rate limit had no slot left."""
        self._add(THROTTLED, task, "", 1)

    def attempt(self, task: str, started_at: datetime | None, ended_at: datetime) -> None:
        """An attempt ended on its node: its duration (nothing if it never started)."""
        if started_at is not None:
            self._observe(RUN_DURATION, task, (ended_at - started_at).total_seconds())

    def waited(self, task: str, scheduled_for: datetime, started_at: datetime) -> None:
        """A run was claimed: how long it waited after it was due. Negative waits (the
        scheduling node's clock ahead of this one's) count as zero."""
        self._observe(QUEUE_WAIT, task, (started_at - scheduled_for).total_seconds())

    def _observe(self, metric: str, task: str, seconds: float) -> None:
        seconds = max(0.0, seconds)
        index = bisect.bisect_left(HISTOGRAMS[metric], seconds)
        self._add(metric, task, _LABELS[metric][index], 1)
        self._add(metric, task, SUM, seconds)

    def flush(self, conn: Connection) -> None:
        if not self._values:
            return
        rows = [{"metric": m, "task": t, "label": label, "value": v}
                for (m, t, label), v in sorted(self._values.items())]
        self._values = {}
        upsert = _upsert(conn.dialect.name)
        if upsert is None:
            _update_or_insert(conn, rows)
            return
        upsert.many(conn, rows)


# The dialects with ``INSERT … ON CONFLICT``.
_INSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


@functools.cache
def _upsert(dialect: str) -> Prepared | None:
    """The dialect's ``INSERT … ON CONFLICT DO UPDATE`` adding to the value; None where there
    is none. Built once per dialect, not on every flush (on SQLite, run on the driver)."""
    insert = _INSERTS.get(dialect)
    if insert is None:
        return None
    stmt = insert(stats)
    return Prepared(stmt.on_conflict_do_update(
        index_elements=[stats.c.metric, stats.c.task, stats.c.label],
        set_={"value": stats.c.value + stmt.excluded.value}))


def _update_or_insert(conn: Connection, rows: list[dict[str, Any]]) -> None:
    for row in rows:
        key = (stats.c.metric == row["metric"], stats.c.task == row["task"],
               stats.c.label == row["label"])
        if conn.execute(stats.update().where(*key)
                        .values(value=stats.c.value + row["value"])).rowcount == 0:
            conn.execute(stats.insert().values(**row))


def forget_misfire_marks(conn: Connection) -> None:
    """Drop the marks of jobs that no longer exist (done while pruning runs)."""
    conn.execute(misfire_marks.delete().where(
        misfire_marks.c.job_id.not_in(sa.select(jobs.c.id))))


@dataclass(frozen=True)
class Histogram:
    """Cumulative bucket counts ``(upper bound, observations <= bound)``, ending at +inf."""

    buckets: tuple[tuple[float, int], ...]
    sum: float

    @property
    def count(self) -> int:
        return self.buckets[-1][1]


@dataclass(frozen=True)
class Snapshot:
    """Everything /metrics shows, read from the database in one transaction."""

    runs_finished: Mapping[tuple[str, str], int]  # (task, final state) -> runs
    run_duration: Mapping[str, Histogram]  # task -> attempts' durations
    queue_wait: Mapping[str, Histogram]  # task -> claims' waits
    misfires: Mapping[str, int]  # task -> missed fires
    node_lost: Mapping[str, int]  # task -> attempts settled as NodeLost
    deduplicated: Mapping[str, int]  # task -> runs refused: their unique key was held
    throttled: Mapping[str, int]  # task -> runs held back by their rate limit
    queued: Mapping[str, int]  # task -> runs queued now
    running: Mapping[str, int]  # task -> runs running now
    nodes_alive: Mapping[str, int]  # role -> live nodes
    jobs_scheduled: int
    jobs_paused: int
    alerts: Mapping[str, int]  # alert state (pending, delivered, given_up) -> alerts


class StatsStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def record_misfire(self, job_id: str, task: str, fire_time: datetime) -> bool:
        """Count a missed fire once across the cluster. Every node may see the same missed
        fire of a job; only the one whose conditional upsert moves the job's mark forward
        counts it. Returns whether this call counted it."""
        mark = fire_time.timestamp()
        with self.db.write() as conn:
            upsert = _INSERTS.get(conn.dialect.name)
            if upsert is None:
                moved = conn.execute(misfire_marks.update().where(
                    misfire_marks.c.job_id == job_id, misfire_marks.c.fire_time < mark)
                    .values(fire_time=mark)).rowcount
                if not moved and conn.execute(sa.select(misfire_marks.c.job_id).where(
                        misfire_marks.c.job_id == job_id)).first() is None:
                    conn.execute(misfire_marks.insert().values(job_id=job_id, fire_time=mark))
                    moved = 1
            else:
                # RETURNING, not rowcount: psycopg reports no row count for an upsert.
                stmt = upsert(misfire_marks).values(job_id=job_id, fire_time=mark)
                moved = len(conn.execute(stmt.on_conflict_do_update(
                    index_elements=[misfire_marks.c.job_id],
                    set_={"fire_time": stmt.excluded.fire_time},
                    where=misfire_marks.c.fire_time < stmt.excluded.fire_time,
                ).returning(misfire_marks.c.job_id)).all())
            if moved != 1:
                return False
            tally = Tally()
            tally.misfire(task)
            tally.flush(conn)
        return True

    def snapshot(self, lease_seconds: float) -> Snapshot:
        """Totals and gauges now; a node is alive as in ``NodeRecord.alive``."""
        alive_since = utcnow() - timedelta(seconds=lease_seconds)
        with self.db.read() as conn:
            totals = conn.execute(sa.select(stats.c.metric, stats.c.task, stats.c.label,
                                            stats.c.value)).all()
            active = conn.execute(
                sa.select(runs.c.task, runs.c.state, sa.func.count())
                .where(IS_ACTIVE)
                .group_by(runs.c.task, runs.c.state)).all()
            alive = conn.execute(
                sa.select(nodes.c.role, sa.func.count())
                .where(nodes.c.stopped_at.is_(None), nodes.c.heartbeat_at >= alive_since)
                .group_by(nodes.c.role)).all()
            job_total, job_scheduled = conn.execute(
                sa.select(sa.func.count(), sa.func.count(jobs.c.next_run_time))).one()
            alert_states = conn.execute(
                sa.select(alerts.c.state, sa.func.count()).group_by(alerts.c.state)).all()
        counters: dict[str, dict[tuple[str, str], float]] = {}
        for metric, task, label, value in totals:
            counters.setdefault(metric, {})[task, label] = value
        return Snapshot(
            runs_finished={k: round(v) for k, v in counters.get(RUNS_FINISHED, {}).items()},
            run_duration=_histograms(counters.get(RUN_DURATION, {}), DURATION_BUCKETS),
            queue_wait=_histograms(counters.get(QUEUE_WAIT, {}), QUEUE_WAIT_BUCKETS),
            misfires={t: round(v) for (t, _), v in counters.get(MISFIRES, {}).items()},
            node_lost={t: round(v) for (t, _), v in counters.get(NODE_LOST, {}).items()},
            deduplicated={t: round(v) for (t, _), v in counters.get(DEDUPLICATED, {}).items()},
            throttled={t: round(v) for (t, _), v in counters.get(THROTTLED, {}).items()},
            queued={t: n for t, s, n in active if s == "queued"},
            running={t: n for t, s, n in active if s == "running"},
            nodes_alive={role: n for role, n in alive},
            jobs_scheduled=int(job_scheduled),
            jobs_paused=int(job_total) - int(job_scheduled),
            alerts={state: n for state, n in alert_states},
        )


def _histograms(rows: Mapping[tuple[str, str], float],
                bounds: tuple[float, ...]) -> dict[str, Histogram]:
    all_bounds = (*bounds, math.inf)
    per_task: dict[str, list[float]] = {}
    sums: dict[str, float] = {}
    for (task, label), value in rows.items():
        counts = per_task.setdefault(task, [0.0] * len(all_bounds))
        if label == SUM:
            sums[task] = value
            continue
        try:
            bound = float(label)
        except ValueError:
            continue
        counts[bisect.bisect_left(all_bounds, bound)] += value
    result = {}
    for task, counts in per_task.items():
        cumulative, running = [], 0.0
        for bound, count in zip(all_bounds, counts, strict=True):
            running += count
            cumulative.append((bound, round(running)))
        result[task] = Histogram(tuple(cumulative), sums.get(task, 0.0))
    return result
