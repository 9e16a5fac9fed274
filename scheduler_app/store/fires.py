"""The reads and the one write of a scheduler pass: the due job rows to plan from, then one
transaction that records the planned fires as runs and moves each job on, unless its row
changed since it was read (docs/ARCHITECTURE.md, "One pass of the loop").
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import sqlalchemy as sa

from ..timeutil import utcnow
from .db import LOCK_CLAIM
from .jobs import JobRecord, from_epoch, to_epoch
from .lifecycle import NewRun, Run, new_run_values
from .runs import RunStore
from .schema import IS_ACTIVE, jobs, runs

_ADVANCE = (jobs.update()
            .where(jobs.c.id == sa.bindparam("job"))
            .values(next_run_time=sa.bindparam("next"), version=jobs.c.version + 1))
_REMOVE = jobs.delete().where(jobs.c.id == sa.bindparam("job"))
_INSERT_RUNS = runs.insert()
_NEXT_FIRE = sa.select(sa.func.min(jobs.c.next_run_time))


@dataclass(frozen=True)
class JobFires:
    """What the scheduler decided for one due job, from the row it read."""

    job_id: str
    version: int  # of the row the fires were planned from; another version is not touched
    next_run_time: datetime | None  # None: the trigger is exhausted and the job is removed
    runs: tuple[NewRun, ...]  # one per fire time to record, oldest first
    max_instances: int


@dataclass
class PassOutcome:
    # (job id, fire time) of each fire recorded as a run
    recorded: list[tuple[str, datetime]] = field(default_factory=list)
    # (job id, fire time, why) of fires not turned into runs
    skipped: list[tuple[str, datetime, str]] = field(default_factory=list)
    # jobs whose row changed (or another transaction holds it) since it was read: untouched,
    # for the next pass to plan again from what it is now
    changed: list[str] = field(default_factory=list)
    # the earliest next fire time of the jobs not left out, after this pass
    next_run_time: datetime | None = None
    # with ``start_on``: the first recorded fire, written already running on that node
    started: Run | None = None


class FireStore:
    def __init__(self, runs: RunStore) -> None:
        self.db = runs.db
        self.runs = runs

    def next_fire_time(self, skip: Collection[str] = ()) -> datetime | None:
        """The earliest next fire time of the jobs not in ``skip`` (None: no job scheduled).
        A read, so a loop that finds nothing due takes no write lock to learn it."""
        if not skip:
            return from_epoch(self.db.poll(_NEXT_FIRE))
        with self.db.read() as conn:
            return from_epoch(conn.execute(_NEXT_FIRE.where(jobs.c.id.not_in(list(skip))))
                              .scalar())

    def due_jobs(self, now: datetime, skip: Collection[str] = (),
                 limit: int = 500) -> list[JobRecord]:
        """Up to ``limit`` jobs due at ``now``, oldest due first, leaving out ``skip``."""
        query = (sa.select(jobs).where(jobs.c.next_run_time <= now.timestamp())
                 .order_by(jobs.c.next_run_time, jobs.c.id).limit(limit))
        if skip:
            query = query.where(jobs.c.id.not_in(list(skip)))
        with self.db.read() as conn:
            return [JobRecord.from_row(r) for r in conn.execute(query).mappings()]

    def record(self, planned: Sequence[JobFires], skip: Collection[str] = (),
               start_on: str | None = None,
               claim_only: Collection[str] = ()) -> PassOutcome:
        """Record ``planned`` in one write transaction: lock each job's row and keep only those
        still at the version planned from (the others go to ``changed``, untouched); record
        their fires as runs, except a fire already recorded (the unique key on job id and
        fire time), one past ``max_instances`` runs queued or running, or one whose unique key
        an active run holds (counted as deduplicated); move each job to its
        next fire time or remove it; read the next fire time of the jobs not in ``skip``.

        With ``start_on`` (a node with a thread waiting), the first fire recorded is written
        already claimed by that node, as ``RunStore.create(running_on=...)`` does for a
        run-now request; the others are queued. Runs of a task in ``claim_only`` (one with a
        ``max_running``, counted only by the claim) are always queued."""
        outcome = PassOutcome()
        with self.db.write(lock=LOCK_CLAIM) as conn:
            if planned:
                current = {job_id: version for job_id, version in conn.execute(
                    sa.select(jobs.c.id, jobs.c.version)
                    .where(jobs.c.id.in_([item.job_id for item in planned]))
                    .with_for_update(skip_locked=True))}
                batch = [item for item in planned if current.get(item.job_id) == item.version]
                outcome.changed = [item.job_id for item in planned
                                   if current.get(item.job_id) != item.version]
                self._record(conn, batch, outcome, start_on, claim_only)
            query = _NEXT_FIRE
            if skip:
                query = query.where(jobs.c.id.not_in(list(skip)))
            outcome.next_run_time = from_epoch(conn.execute(query).scalar())
        return outcome

    def _record(self, conn: sa.Connection, batch: Sequence[JobFires], outcome: PassOutcome,
                start_on: str | None, claim_only: Collection[str]) -> None:
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
            .where(runs.c.job_id.in_(firing_ids), IS_ACTIVE)
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
                    starting = (start_on is not None and outcome.started is None
                                and not new.needs_claim and new.task not in claim_only)
                    if new.unique_key is not None or starting:
                        # One insert of its own: a held unique key skips the fire (counted
                        # as deduplicated), and the first fire may start here at once.
                        run, created = self.runs.insert_in(
                            conn, new, running_on=start_on if starting else None)
                        if not created:
                            outcome.skipped.append((item.job_id, new.fire_time,
                                                    f"unique key held by run {run.id}"))
                            continue
                        if starting:
                            outcome.started = run
                    else:
                        rows.append(new_run_values(new, now))
                    outcome.recorded.append((item.job_id, new.fire_time))
                    active[item.job_id] = active.get(item.job_id, 0) + 1
        if rows:
            conn.execute(_INSERT_RUNS, rows)

