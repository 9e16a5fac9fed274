"""Planning a pass: rows and their APScheduler jobs in, fires out. No database, no threads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

import scheduler_app.tasks.demo  # noqa: F401  (registers demo.*)
from scheduler_app.scheduler.jobspec import JobSpec, to_apscheduler_job
from scheduler_app.scheduler.plan import due_fires, plan_fires
from scheduler_app.store import JobRecord

NOW = datetime(2024, 5, 1, 12, 0, 3, 1000, tzinfo=UTC)
START = NOW.replace(microsecond=0) - timedelta(seconds=3)  # three seconds of missed fires


def interval_job(coalesce: bool = True, grace: float | None = 60, task: str = "demo.echo",
                 next_run_time: datetime | None = START):
    spec = JobSpec("n", task, {"value": 1}, {"type": "interval", "seconds": 1},
                   coalesce=coalesce, misfire_grace_time=grace, max_instances=3)
    trigger = IntervalTrigger(seconds=1, start_date=START, timezone="UTC")
    job = to_apscheduler_job("c", spec, next_run_time, trigger)
    record = JobRecord(id="c", task=task, spec=spec.to_json(), next_run_time=next_run_time,
                       version=7, created_at=START, updated_at=START)
    return record, job


def test_a_coalescing_job_fires_once_for_all_it_missed():
    due = due_fires(interval_job(coalesce=True)[1], NOW)
    assert due is not None
    assert due.run_times == [START + timedelta(seconds=3)]
    assert due.next_run_time == START + timedelta(seconds=4)


def test_a_job_that_does_not_coalesce_fires_for_each_time_it_missed():
    due = due_fires(interval_job(coalesce=False)[1], NOW)
    assert due is not None
    assert due.run_times == [START + timedelta(seconds=k) for k in range(4)]
    assert due.next_run_time == START + timedelta(seconds=4)


def test_a_job_not_due_or_paused_makes_no_fires():
    assert due_fires(interval_job(next_run_time=NOW + timedelta(seconds=1))[1], NOW) is None
    assert due_fires(interval_job(next_run_time=None)[1], NOW) is None


def test_an_exhausted_trigger_has_no_next_fire_time():
    record, job = interval_job()
    job.trigger = DateTrigger(START, timezone="UTC")
    due = due_fires(job, NOW)
    assert due is not None and due.run_times == [START] and due.next_run_time is None


def test_the_plan_carries_the_version_read_and_a_run_per_fire():
    plan = plan_fires([interval_job(coalesce=False)], NOW, retry_backoff=2.0)
    [fires] = plan.fires
    assert (fires.job_id, fires.version, fires.max_instances) == ("c", 7, 3)
    assert fires.next_run_time == START + timedelta(seconds=4)
    assert [r.fire_time for r in fires.runs] == [START + timedelta(seconds=k) for k in range(4)]
    assert {(r.task, r.job_id, r.retry_backoff) for r in fires.runs} == {("demo.echo", "c", 2.0)}
    assert plan.missed == []


def test_a_fire_later_than_the_grace_time_is_missed_not_run():
    plan = plan_fires([interval_job(coalesce=False, grace=1.5)], NOW, retry_backoff=2.0)
    [fires] = plan.fires
    assert [r.fire_time for r in fires.runs] == [START + timedelta(seconds=k) for k in (2, 3)]
    assert [(m.fire_time, m.task) for m in plan.missed] == [
        (START, "demo.echo"), (START + timedelta(seconds=1), "demo.echo")]
    assert fires.next_run_time == START + timedelta(seconds=4)  # the job still moves on


def test_a_job_whose_task_is_not_registered_moves_on_without_a_run():
    plan = plan_fires([interval_job(task="no.such.task")], NOW, retry_backoff=2.0)
    [fires] = plan.fires
    assert fires.runs == () and fires.next_run_time == START + timedelta(seconds=4)
