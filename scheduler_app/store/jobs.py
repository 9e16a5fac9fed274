"""The job table's queries: one row per scheduled job, its spec (task, kwargs, trigger as
given, options) as JSON, its next fire time as epoch seconds. ``scheduler.jobstore`` turns a
spec into an APScheduler job.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from ..errors import JobLimitReached
from ..timeutil import utcnow
from .db import LOCK_CLAIM, Database
from .schema import jobs

# A job's place in list order: (next run time as epoch seconds or None if paused, id).
JobKey = tuple[float | None, str]


class JobExists(Exception):
    """A job with that id already exists."""


@dataclass(frozen=True)
class JobRecord:
    id: str
    task: str
    spec: dict[str, Any]
    next_run_time: datetime | None
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: sa.RowMapping) -> JobRecord:
        values = dict(row)
        values["next_run_time"] = from_epoch(values["next_run_time"])
        return cls(**values)


def to_epoch(value: datetime | None) -> float | None:
    return None if value is None else value.timestamp()


def from_epoch(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, UTC)


class JobStoreQueries:
    def __init__(self, db: Database) -> None:
        self.db = db

    def insert(self, job_id: str, task: str, spec: dict[str, Any],
               next_run_time: datetime | None, max_jobs: int | None = None) -> None:
        """Add a job; JobExists if the id is taken, JobLimitReached past ``max_jobs``."""
        now = utcnow()
        try:
            with self.db.write(lock=LOCK_CLAIM if max_jobs else None) as conn:
                if max_jobs is not None:
                    count = conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one()
                    if count >= max_jobs:
                        raise JobLimitReached(f"there are already {count} jobs (MAX_JOBS)")
                conn.execute(jobs.insert().values(
                    id=job_id, task=task, spec=spec, next_run_time=to_epoch(next_run_time),
                    version=1, created_at=now, updated_at=now))
        except IntegrityError:
            raise JobExists(job_id) from None

    def update(self, job_id: str, task: str, spec: dict[str, Any],
               next_run_time: datetime | None, expected_version: int | None = None) -> bool:
        """Write a job's new state; with ``expected_version``, only if nobody wrote it since."""
        condition = jobs.c.id == job_id
        if expected_version is not None:
            condition = sa.and_(condition, jobs.c.version == expected_version)
        with self.db.write() as conn:
            result = conn.execute(jobs.update().where(condition).values(
                task=task, spec=spec, next_run_time=to_epoch(next_run_time),
                version=jobs.c.version + 1, updated_at=utcnow()))
        return result.rowcount == 1

    def advance(self, job_id: str, next_run_time: datetime | None, expected_version: int) -> bool:
        """Move a job's next fire time after it fired, only if nobody changed it meanwhile."""
        with self.db.write() as conn:
            result = conn.execute(
                jobs.update().where(jobs.c.id == job_id, jobs.c.version == expected_version)
                .values(next_run_time=to_epoch(next_run_time), version=jobs.c.version + 1))
        return result.rowcount == 1

    def delete(self, job_id: str, expected_version: int | None = None) -> bool:
        condition = jobs.c.id == job_id
        if expected_version is not None:
            condition = sa.and_(condition, jobs.c.version == expected_version)
        with self.db.write() as conn:
            return conn.execute(jobs.delete().where(condition)).rowcount == 1

    def delete_all(self) -> None:
        with self.db.write() as conn:
            conn.execute(jobs.delete())

    def get(self, job_id: str) -> JobRecord | None:
        with self.db.read() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).mappings().first()
        return None if row is None else JobRecord.from_row(row)

    def due(self, now: datetime) -> list[JobRecord]:
        query = (sa.select(jobs).where(jobs.c.next_run_time <= now.timestamp())
                 .order_by(jobs.c.next_run_time, jobs.c.id))
        with self.db.read() as conn:
            return [JobRecord.from_row(r) for r in conn.execute(query).mappings()]

    def next_run_time(self) -> datetime | None:
        with self.db.read() as conn:
            return from_epoch(conn.execute(sa.select(sa.func.min(jobs.c.next_run_time))).scalar())

    def all(self) -> list[JobRecord]:
        query = sa.select(jobs).order_by(jobs.c.next_run_time.is_(None), jobs.c.next_run_time,
                                         jobs.c.id)
        with self.db.read() as conn:
            return [JobRecord.from_row(r) for r in conn.execute(query).mappings()]

    def page(self, *, task: str | None = None, paused: bool | None = None, limit: int = 50,
             after: JobKey | None = None) -> list[JobRecord]:
        """Jobs by next run time, paused ones last, then by id; ``after`` is the keyset cursor
        (the key of the last job of the previous page), so pages neither repeat nor skip jobs
        when others fire or change in between. Scheduled jobs, then paused ones: two range
        scans of ``ix_scheduler_jobs_next_run`` in one read transaction, never a sort."""
        where = [] if task is None else [jobs.c.task == task]
        scheduled = (sa.select(jobs).where(jobs.c.next_run_time.is_not(None), *where)
                     .order_by(jobs.c.next_run_time, jobs.c.id))
        unscheduled = (sa.select(jobs).where(jobs.c.next_run_time.is_(None), *where)
                       .order_by(jobs.c.id))
        if after is not None:
            nrt, job_id = after
            if nrt is None:  # the previous page ended among the paused jobs
                if paused is False:
                    return []
                paused = True
                unscheduled = unscheduled.where(jobs.c.id > job_id)
            else:
                scheduled = scheduled.where(
                    sa.tuple_(jobs.c.next_run_time, jobs.c.id) > sa.tuple_(nrt, job_id))
        queries = {True: [unscheduled], False: [scheduled], None: [scheduled, unscheduled]}
        found: list[JobRecord] = []
        with self.db.read() as conn:
            for query in queries[paused]:
                if len(found) < limit:
                    rows = conn.execute(query.limit(limit - len(found))).mappings()
                    found += [JobRecord.from_row(r) for r in rows]
        return found

    @staticmethod
    def key(record: JobRecord) -> JobKey:
        return to_epoch(record.next_run_time), record.id
