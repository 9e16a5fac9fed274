"""``SpecJobStore``: the APScheduler 3 job store over the ``jobs`` table (JSON specs, no
pickles). It turns a row into an APScheduler ``Job`` (``load``) and remembers the rows that
cannot be (``broken``): skipped and reported, never deleted. Jobs are written by
``services.jobs`` and by the loop's pass (``store.fires``), never through this store."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import NoReturn

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore

from ..store import JobRecord, JobStoreQueries
from .jobspec import JobSpec, to_apscheduler_job
from .triggers import TriggerError

log = logging.getLogger(__name__)


class SpecJobStore(BaseJobStore):  # type: ignore[misc]
    def __init__(self, queries: JobStoreQueries, timezone: str) -> None:
        super().__init__()
        self.queries = queries
        self.timezone = timezone
        self.broken: dict[str, str] = {}  # job id -> why its row cannot be loaded

    def load(self, record: JobRecord) -> Job | None:
        """The APScheduler job of ``record``; None (and the job in ``broken``) if it cannot be
        built, e.g. a trigger this version of the code does not know."""
        try:
            spec = JobSpec.from_json(record.spec)
            trigger = spec.build_trigger(self.timezone)
        except (KeyError, TypeError, ValueError, TriggerError) as exc:
            reason = f"stored job cannot be loaded: {exc}"
            if self.broken.get(record.id) != reason:
                log.error("job %s skipped: %s", record.id, reason, extra={"job_id": record.id})
            self.broken[record.id] = reason
            return None
        self.broken.pop(record.id, None)
        return to_apscheduler_job(record.id, spec, record.next_run_time, trigger)

    # -- BaseJobStore's reads ---------------------------------------------------------------
    def lookup_job(self, job_id: str) -> Job | None:
        record = self.queries.get(job_id)
        return None if record is None else self.load(record)

    def get_due_jobs(self, now: datetime) -> list[Job]:
        jobs = (self.load(r) for r in self.queries.due(now) if r.id not in self.broken)
        return [j for j in jobs if j is not None]

    def get_next_run_time(self) -> datetime | None:
        times = [r.next_run_time for r in self.queries.all()
                 if r.next_run_time is not None and r.id not in self.broken]
        return min(times, default=None)

    def get_all_jobs(self) -> list[Job]:
        jobs = (self.load(r) for r in self.queries.all())
        return [j for j in jobs if j is not None]

    # -- BaseJobStore's writes: not through here --------------------------------------------
    def add_job(self, job: Job) -> NoReturn:
        _not_here()

    def update_job(self, job: Job) -> NoReturn:
        _not_here()

    def remove_job(self, job_id: str) -> NoReturn:
        _not_here()

    def remove_all_jobs(self) -> NoReturn:
        _not_here()


def _not_here() -> NoReturn:
    raise TypeError("jobs are written by services.jobs (validated, stored as specs) and moved "
                    "on by the scheduler loop's pass, not through APScheduler's job store API")
