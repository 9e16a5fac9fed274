"""A scheduler pass in one transaction: read the due jobs, record their fires as runs, move
each job to its next fire time, and read when the next one is due.

A pass used to be a read of the due jobs, then per job a version read and two write
transactions (record the fire, advance the job), then a read of the next fire time; with 100
jobs due at the same second the last fire was recorded about 0.7 s late, and two nodes waking
together fought over the write lock for every job (bench/README.md, "Fire-time accuracy").
Here a pass is one write transaction with a fixed number of statements whatever the number of
jobs, and the queued runs are inserted in one multi-row statement (100 inserts one by one
took 17 ms of a 19 ms pass). The due rows are read under the write lock (SQLite) or locked
``FOR UPDATE SKIP LOCKED`` (PostgreSQL), so a node that wakes at the same moment as another
finds them already moved on, or skips them, instead of repeating the work; a pause, edit or
delete either commits before the pass reads the row (and wins) or waits until the pass
committed.

A fire already recorded (the unique key on job id and fire time) or one past
``max_instances`` runs queued or running is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from ..timeutil import utcnow
from .db import LOCK_CLAIM
from .jobs import JobRecord, from_epoch, to_epoch
from .lifecycle import ACTIVE_STATES, NewRun, Run, RunState
from .runs import RunStore
from .schema import jobs, runs

_ADVANCE = (jobs.update()
            .where(jobs.c.id == sa.bindparam("job"))
            .values(next_run_time=sa.bindparam("next"), version=jobs.c.version + 1))
_REMOVE = jobs.delete().where(jobs.c.id == sa.bindparam("job"))
_INSERT_RUNS = runs.insert()
_NEXT_FIRE = sa.select(sa.func.min(jobs.c.next_run_time))
_ACTIVE = [s.value for s in ACTIVE_STATES]


@dataclass(frozen=True)
class JobFires:
    """What the scheduler decided for one due job."""

    job_id: str
    next_run_time: datetime | None  # None: the trigger is exhausted and the job is removed
    runs: tuple[NewRun, ...]  # one per fire time to record, oldest first
    max_instances: int


# Given the due jobs (locked), what to do with each; a job left out is left untouched.
Plan = Callable[[list[JobRecord]], list[JobFires]]


@dataclass
class PassOutcome:
    # (job id, fire time) of each fire recorded as a run
    recorded: list[tuple[str, datetime]] = field(default_factory=list)
    # (job id, fire time, why) of fires not turned into runs
    skipped: list[tuple[str, datetime, str]] = field(default_factory=list)
    # the earliest next fire time of the jobs not skipped, after this pass
    next_run_time: datetime | None = None
    # with ``start_on``: the first recorded fire, written already running on that node
    started: Run | None = None


class FireStore:
    def __init__(self, runs: RunStore) -> None:
        self.db = runs.db
        self.runs = runs

    def next_fire_time(self, skip: Collection[str] = ()) -> datetime | None:
        """The earliest next fire time of the jobs not in ``skip`` (None: no job scheduled).

        Read before a pass: a pass is a write transaction, and a loop that finds nothing due
        (most polls of an idle node) should not take the write lock to learn it."""
        if not skip:
            return from_epoch(self.db.poll(_NEXT_FIRE))
        with self.db.read() as conn:
            query = _NEXT_FIRE.where(jobs.c.id.not_in(list(skip)))
            return from_epoch(conn.execute(query).scalar())

    def fire_due(self, now: datetime, plan: Plan, skip: Collection[str] = (),
                 limit: int = 500, start_on: str | None = None) -> PassOutcome:
        """One pass (see the module's docstring) over up to ``limit`` jobs due at ``now``,
        leaving out the ids in ``skip`` (jobs that cannot be loaded). With ``start_on`` (a
        node with a thread waiting), the first fire recorded is written already claimed by
        that node, as ``RunStore.create(running_on=...)`` does for a run-now request; the
        others are queued."""
        outcome = PassOutcome()
        skipped = set(skip)
        with self.db.write(lock=LOCK_CLAIM) as conn:
            query = (sa.select(jobs).where(jobs.c.next_run_time <= now.timestamp())
                     .order_by(jobs.c.next_run_time, jobs.c.id).limit(limit)
                     .with_for_update(skip_locked=True))
            if skipped:
                query = query.where(jobs.c.id.not_in(skipped))
            due = [JobRecord.from_row(r) for r in conn.execute(query).mappings()]
            batch = plan(due) if due else []
            planned = {item.job_id for item in batch}
            skipped.update(r.id for r in due if r.id not in planned)
            self._record(conn, batch, outcome, start_on)
            query = _NEXT_FIRE
            if skipped:
                query = query.where(jobs.c.id.not_in(skipped))
            outcome.next_run_time = from_epoch(conn.execute(query).scalar())
        return outcome

    def _record(self, conn: sa.Connection, batch: Sequence[JobFires], outcome: PassOutcome,
                start_on: str | None) -> None:
        advance = [{"job": i.job_id, "next": to_epoch(i.next_run_time)} for i in batch
                   if i.next_run_time is not None]
        remove = [{"job": i.job_id} for i in batch if i.next_run_time is None]
        if advance:
            conn.execute(_ADVANCE, advance)
        if remove:
            conn.execute(_REMOVE, remove)
        firing = [item for item in batch if item.runs]
        if not firing:
            return
        firing_ids = [item.job_id for item in firing]
        earliest = min(new.fire_time for item in firing for new in item.runs
                       if new.fire_time is not None)
        recorded = {(job_id, fire_time) for job_id, fire_time in conn.execute(
            sa.select(runs.c.job_id, runs.c.fire_time)
            .where(runs.c.job_id.in_(firing_ids), runs.c.fire_time >= earliest))}
        active: dict[str, int] = dict(conn.execute(
            sa.select(runs.c.job_id, sa.func.count())
            .where(runs.c.job_id.in_(firing_ids), runs.c.state.in_(_ACTIVE))
            .group_by(runs.c.job_id)).all())
        now = utcnow()
        rows = []
        for item in firing:
            for new in item.runs:
                assert new.job_id == item.job_id and new.fire_time is not None
                if (item.job_id, new.fire_time) in recorded:
                    outcome.skipped.append((item.job_id, new.fire_time, "already recorded"))
                elif active.get(item.job_id, 0) >= item.max_instances:
                    outcome.skipped.append((item.job_id, new.fire_time,
                                            f"max_instances ({item.max_instances}) reached"))
                else:
                    if start_on is not None and outcome.started is None:
                        outcome.started = self.runs.create(new, conn, running_on=start_on)
                    else:
                        rows.append(_queued(new, now))
                    outcome.recorded.append((item.job_id, new.fire_time))
                    active[item.job_id] = active.get(item.job_id, 0) + 1
        if rows:
            conn.execute(_INSERT_RUNS, rows)


def _queued(new: NewRun, now: datetime) -> dict[str, object]:
    """The row of a queued run, as ``RunStore.create`` writes one."""
    return {"task": new.task, "kwargs": new.kwargs, "job_id": new.job_id,
            "fire_time": new.fire_time, "state": RunState.QUEUED.value, "node": None,
            "started_at": None, "attempt": 1, "max_attempts": new.max_attempts,
            "retry_backoff": new.retry_backoff, "timeout": new.timeout,
            "cancel_requested": False, "errors": [], "created_at": now,
            "scheduled_for": new.scheduled_for}
