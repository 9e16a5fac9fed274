"""APScheduler's BackgroundScheduler with the guards a shared job table needs.

- One transaction per pass: APScheduler's ``_process_jobs`` reads the due jobs, hands each to
  the executor and writes it back through the job store, one job at a time; with a database
  behind those calls that was three transactions per job, and with 100 jobs due at once the
  last one was recorded about 0.7 s late (bench/README.md, "Fire-time accuracy"). Here a pass
  is one call, ``fire_due(now)`` (``Node.fire_due``: one write transaction), which works out
  each due job's fire times and next fire time exactly as APScheduler 3 does (``due_fires``)
  and returns the next fire time it knows of. Listeners still receive
  ``EVENT_JOB_SUBMITTED`` for each job fired.
- A bounded wait: APScheduler sleeps until the next fire time it knows of (forever when there
  is none), so a job added by another process would go unnoticed. The wait is capped at
  ``poll_seconds``, so every node sees other nodes' changes within about a second.
- A loop that cannot die: an exception from the database is logged and the pass retried
  shortly; one database hiccup would otherwise end APScheduler's thread for good.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from apscheduler.events import EVENT_JOB_SUBMITTED, JobSubmissionEvent
from apscheduler.job import Job
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DueJob:
    """A due job in one pass: the fire times to record and where the job goes next."""

    job: Job
    run_times: list[datetime]  # oldest first; only the latest when the job coalesces
    next_run_time: datetime | None  # None: the trigger is exhausted


def due_fires(job: Job, now: datetime) -> DueJob | None:
    """APScheduler 3's rule for a due job (``BaseScheduler._process_jobs``): its fire times up
    to ``now``, the latest only if it coalesces, and its next fire time after them."""
    run_times = job._get_run_times(now)
    if job.coalesce:
        run_times = run_times[-1:]
    if not run_times:
        return None
    return DueJob(job, run_times, job.trigger.get_next_fire_time(run_times[-1], now))


@dataclass(frozen=True)
class FirePass:
    """What a pass did: the jobs it fired, and the next fire time it knows of."""

    fired: list[DueJob]
    next_run_time: datetime | None


class PollingScheduler(BackgroundScheduler):  # type: ignore[misc]
    def __init__(self, poll_seconds: float, fire_due: Callable[[datetime], FirePass],
                 **options: Any) -> None:
        self.poll_seconds = poll_seconds
        self.fire_due = fire_due
        super().__init__(**options)

    def _process_jobs(self) -> float:
        try:
            wait = self._fire_pass()
        except Exception:
            log.exception("scheduler loop: job processing failed; retrying shortly")
            return self.poll_seconds
        return self.poll_seconds if wait is None else min(wait, self.poll_seconds)

    def _fire_pass(self) -> float | None:
        """Fire every due job in one batch (``fire_due``); return the seconds until the next
        fire time (None: none known, or paused)."""
        if self.state == STATE_PAUSED:
            return None
        with self._jobstores_lock:
            done = self.fire_due(datetime.now(self.timezone))
        for due in done.fired:
            self._dispatch_event(JobSubmissionEvent(EVENT_JOB_SUBMITTED, due.job.id,
                                                    due.job._jobstore_alias, due.run_times))
        if done.next_run_time is None:
            return None
        return max(0.0, done.next_run_time.timestamp() - datetime.now(self.timezone).timestamp())
