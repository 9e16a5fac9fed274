"""An APScheduler 3 job store over the ``jobs`` table (JSON specs, no pickles).

What differs from ``SQLAlchemyJobStore`` and why:
- a row that cannot be turned into a job is skipped and remembered (``broken``), never deleted:
  in a shared table during a rolling deploy, deleting would lose another version's job;
- the scheduler loop does not go through this store's read-then-write methods: its pass loads
  the due rows it has locked with ``load`` and writes them back in the same transaction
  (``store.fires``), so a pause, edit or delete made meanwhile by an API call wins instead of
  being overwritten; ``update_job``/``remove_job`` (APScheduler's own write-back) keep the
  same promise with a compare-and-set on the version that was read;
- conflicts on the scheduler's path are logged and absorbed (an exception there would kill
  APScheduler's loop thread), while API-style callers still get ``JobLookupError``.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime

from apscheduler.job import Job
from apscheduler.jobstores.base import BaseJobStore, ConflictingIdError
from sqlalchemy.exc import SQLAlchemyError

from ..store import JobRecord, JobStoreQueries
from .jobspec import JobSpec, to_apscheduler_job
from .triggers import TriggerError

log = logging.getLogger(__name__)


class SpecJobStore(BaseJobStore):  # type: ignore[misc]
    def __init__(self, queries: JobStoreQueries, timezone: str) -> None:
        super().__init__()
        self.queries = queries
        self.timezone = timezone
        self.broken: dict[str, str] = {}
        self._versions: dict[str, int] = {}
        self._lock = threading.Lock()

    # -- reading ----------------------------------------------------------------------------
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
        return to_apscheduler_job(record.id, spec, record.next_run_time, trigger,
                                  self._scheduler, self._alias)

    def _load_for_update(self, record: JobRecord) -> Job | None:
        """``load``, remembering the version read for ``update_job``/``remove_job``."""
        job = self.load(record)
        if job is not None:
            with self._lock:
                self._versions[record.id] = record.version
        return job

    def lookup_job(self, job_id: str) -> Job | None:
        record = self.queries.get(job_id)
        return None if record is None else self._load_for_update(record)

    def get_due_jobs(self, now: datetime) -> list[Job]:
        jobs = (self._load_for_update(r) for r in self.queries.due(now)
                if r.id not in self.broken)
        return [j for j in jobs if j is not None]

    def get_next_run_time(self) -> datetime | None:
        try:
            return self._next_run_time()
        except SQLAlchemyError:
            log.exception("could not read the next fire time; will poll")
            return None

    def _next_run_time(self) -> datetime | None:
        if not self.broken:
            return self.queries.next_run_time()
        times = [r.next_run_time for r in self.queries.all()
                 if r.next_run_time is not None and r.id not in self.broken]
        return min(times, default=None)

    def get_all_jobs(self) -> list[Job]:
        jobs = (self._load_for_update(r) for r in self.queries.all())
        return [j for j in jobs if j is not None]

    # -- writing ----------------------------------------------------------------------------
    def add_job(self, job: Job) -> None:
        """Jobs are created by ``services.jobs`` (validated, written as specs), not here."""
        raise ConflictingIdError(job.id) if self.queries.get(job.id) else TypeError(
            "create jobs through JobService (or JobScheduler.add_job), which validates them")

    def update_job(self, job: Job) -> None:
        """Called by the scheduler loop after a fire: move ``next_run_time`` forward, but only
        on the version that was read, so an edit, pause or delete made meanwhile wins."""
        with self._lock:
            expected = self._versions.pop(job.id, None)
        try:
            advanced = expected is not None and self.queries.advance(
                job.id, job.next_run_time, expected)
        except SQLAlchemyError:
            log.exception("could not advance job %s; another pass will", job.id)
            return
        if not advanced:
            log.info("job %s changed while firing; its newer state is kept", job.id,
                     extra={"job_id": job.id})

    def remove_job(self, job_id: str) -> None:
        """Called by the scheduler loop when a trigger is exhausted (a date job has fired)."""
        with self._lock:
            expected = self._versions.pop(job_id, None)
        try:
            deleted = expected is not None and self.queries.delete(
                job_id, expected_version=expected)
        except SQLAlchemyError:
            log.exception("could not remove finished job %s; another pass will", job_id)
            return
        if not deleted:
            log.info("job %s changed or was removed while firing", job_id,
                     extra={"job_id": job_id})
        self.broken.pop(job_id, None)

    def remove_all_jobs(self) -> None:
        self.queries.delete_all()
        self.broken.clear()

    def shutdown(self) -> None:
        pass
