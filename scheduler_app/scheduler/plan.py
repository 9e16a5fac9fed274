"""The fires a due job makes in a pass, worked out from its row and its APScheduler job alone:
no database, no clock, no thread. APScheduler 3's rules, through its public trigger API."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from apscheduler.job import Job

from ..store import JobRecord, NewRun
from ..store.fires import JobFires
from ..tasks import UnknownTask, registry

log = logging.getLogger(__name__)


def run_times(job: Job, now: datetime) -> list[datetime]:
    """The job's fire times from its ``next_run_time`` up to ``now`` inclusive, oldest first:
    what APScheduler 3.11's private ``Job._get_run_times`` computes, step for step, through
    the trigger's public ``get_next_fire_time``."""
    times = []
    fire_time = job.next_run_time
    while fire_time and fire_time.astimezone(UTC) <= now.astimezone(UTC):
        times.append(fire_time)
        fire_time = job.trigger.get_next_fire_time(fire_time, now)
    return times


@dataclass(frozen=True)
class DueJob:
    """A due job in one pass: the fire times to record and where the job goes next."""

    job: Job
    run_times: list[datetime]  # oldest first; only the latest when the job coalesces
    next_run_time: datetime | None  # None: the trigger is exhausted


def due_fires(job: Job, now: datetime) -> DueJob | None:
    """APScheduler 3's rule for a due job (``BaseScheduler._process_jobs``): its fire times up
    to ``now``, the latest only if it coalesces, and its next fire time after them. None: the
    job is not due."""
    times = run_times(job, now)
    if job.coalesce:
        times = times[-1:]
    if not times:
        return None
    return DueJob(job, times, job.trigger.get_next_fire_time(times[-1], now))


@dataclass(frozen=True)
class Missed:
    """A fire later than its job's misfire grace time: counted, not run."""

    job_id: str
    task: str
    fire_time: datetime
    late: float  # seconds
    grace: float  # the job's misfire grace time, seconds


@dataclass
class Plan:
    fires: list[JobFires] = field(default_factory=list)
    missed: list[Missed] = field(default_factory=list)


def plan_fires(due: Sequence[tuple[JobRecord, Job]], now: datetime,
               retry_backoff: float) -> Plan:
    """What to record for each due job (its row and the job loaded from it): a run per fire
    time within the job's misfire grace time, and its next fire time. A job that is not due
    after all is left out; a job whose task is not registered in this process still moves on,
    without a run."""
    plan = Plan()
    for record, job in due:
        fires = due_fires(job, now)
        if fires is None:
            continue
        plan.fires.append(JobFires(record.id, record.version, fires.next_run_time,
                                   tuple(_new_runs(fires, now, retry_backoff, plan.missed)),
                                   job.max_instances))
    return plan


def _new_runs(due: DueJob, now: datetime, retry_backoff: float,
              missed: list[Missed]) -> list[NewRun]:
    job = due.job
    task_name = job.args[0] if job.args else None
    try:
        task = registry.get(task_name)
    except UnknownTask:
        log.warning("job %s fires task %r, which is not registered in this process; "
                    "fire skipped", job.id, task_name, extra={"job_id": job.id})
        return []
    new_runs = []
    for fire_time in due.run_times:
        fire_time = fire_time.astimezone(UTC)
        late = (now - fire_time).total_seconds()
        grace = job.misfire_grace_time
        if grace is not None and late > grace:
            missed.append(Missed(job.id, task.name, fire_time, late, grace))
            continue
        kwargs = dict(job.kwargs)
        new_runs.append(NewRun(task=task.name, kwargs=kwargs,
                               max_attempts=task.max_attempts,
                               retry_backoff=task.retry_backoff or retry_backoff,
                               timeout=task.timeout, scheduled_for=fire_time,
                               job_id=job.id, fire_time=fire_time,
                               **task.controls.row_values(task.name, kwargs)))
    return new_runs
