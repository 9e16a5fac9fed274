"""The places where the scheduler layer relies on APScheduler 3 beyond its public API.

Each test names its seam, so an APScheduler upgrade that removes or renames one fails here,
loudly, instead of in a scheduler thread. The seams (see docs/ARCHITECTURE.md):

- ``BaseScheduler._process_jobs``: ``PollingScheduler`` overrides it; ``_main_loop`` calls it
  after each wait and sleeps for the seconds it returns.
- ``BaseExecutor._do_submit_job``: abstract; ``RecordOnly`` must define it to be built.
- ``Job.__setstate__``: ``to_apscheduler_job`` builds jobs through the pickle protocol, state
  version 1.
- ``scheduler.plan.run_times``: APScheduler's private ``Job._get_run_times`` redone through the
  public ``trigger.get_next_fire_time``; compared here with the original.
"""

from __future__ import annotations

import inspect
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING, BaseScheduler
from apscheduler.schedulers.blocking import BlockingScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger

from scheduler_app.scheduler.executor import RecordOnly
from scheduler_app.scheduler.jobspec import JobSpec, to_apscheduler_job
from scheduler_app.scheduler.jobstore import SpecJobStore
from scheduler_app.scheduler.loop import PollingScheduler
from scheduler_app.scheduler.plan import run_times

NOW = datetime(2024, 3, 30, 23, 59, 41, 500_000, tzinfo=UTC)  # Paris goes to summer time


def seam(ok: bool, name: str, what: str) -> None:
    if not ok:
        pytest.fail(f"APScheduler seam {name} changed: {what}. "
                    f"See docs/ARCHITECTURE.md, 'The scheduler layer'.")


def job(trigger: Any, next_run_time: datetime | None, coalesce: bool = False) -> Job:
    spec = JobSpec("j", "demo.echo", {"value": 1}, {"type": "interval", "seconds": 1},
                   coalesce=coalesce)
    return to_apscheduler_job("j", spec, next_run_time, trigger)


# -- BaseScheduler._process_jobs ----------------------------------------------------------------
def test_process_jobs_is_the_hook_the_main_loop_calls() -> None:
    seam(callable(getattr(BaseScheduler, "_process_jobs", None)),
         "BaseScheduler._process_jobs", "it is gone")
    seam(list(inspect.signature(BaseScheduler._process_jobs).parameters) == ["self"],
         "BaseScheduler._process_jobs", "it takes arguments now")
    source = inspect.getsource(BlockingScheduler._main_loop)
    seam("wait_seconds = self._process_jobs()" in source,
         "BlockingScheduler._main_loop", "it no longer sleeps for what _process_jobs returns")


class CountingPass:
    def __init__(self) -> None:
        self.calls = 0
        self.called = threading.Event()

    def run(self, now: datetime) -> datetime | None:
        self.calls += 1
        self.called.set()
        return None


def test_the_loop_thread_runs_our_pass_and_honours_pause() -> None:
    fire_pass = CountingPass()
    loop = PollingScheduler(fire_pass, poll_seconds=0.05,
                            jobstore=SpecJobStore(None, "UTC"),  # type: ignore[arg-type]
                            job_defaults={}, timezone="UTC")
    loop.start()
    try:
        seam(fire_pass.called.wait(5), "BaseScheduler._process_jobs",
             "the loop thread never called PollingScheduler._process_jobs")
        assert loop.state == STATE_RUNNING
        loop.pause()
        assert loop.state == STATE_PAUSED
        calls = fire_pass.calls
        assert loop._process_jobs() == 0.05  # paused: no pass, the poll interval
        assert fire_pass.calls == calls
    finally:
        loop.shutdown()


# -- BaseExecutor._do_submit_job ----------------------------------------------------------------
def test_record_only_defines_every_abstract_method_of_the_executor() -> None:
    seam("_do_submit_job" in BaseExecutor.__abstractmethods__, "BaseExecutor._do_submit_job",
         "it is no longer the executor's abstract method")
    RecordOnly()  # would raise TypeError if APScheduler added another abstract method


# -- Job.__setstate__ ---------------------------------------------------------------------------
def test_jobs_are_built_through_state_version_1() -> None:
    trigger = IntervalTrigger(seconds=5, timezone="UTC")
    built = job(trigger, NOW)
    state = built.__getstate__()
    seam(state["version"] == 1, "Job.__setstate__", f"state version {state['version']}")
    expected = {"version", "id", "func", "trigger", "executor", "args", "kwargs", "name",
                "misfire_grace_time", "coalesce", "max_instances", "next_run_time"}
    seam(set(state) == expected, "Job.__setstate__",
         f"the state's keys are now {sorted(state)}")
    assert (built.id, built.args, built.next_run_time, built.trigger) == \
        ("j", ("demo.echo",), NOW, trigger)


# -- Job._get_run_times, redone in public ---------------------------------------------------------
TRIGGERS = {
    "interval, 7 missed": (IntervalTrigger(seconds=7, start_date=NOW - timedelta(seconds=50),
                                           timezone="UTC"), NOW - timedelta(seconds=50)),
    "cron every 10 s, 12 missed": (CronTrigger(second="*/10", timezone="UTC"),
                                   NOW - timedelta(minutes=2)),
    "cron across a DST change": (CronTrigger(minute="*/30", timezone="Europe/Paris"),
                                 datetime(2024, 3, 30, 22, 0, tzinfo=UTC)),
    "date, missed": (DateTrigger(NOW - timedelta(hours=1), timezone="UTC"),
                     NOW - timedelta(hours=1)),
    "date, not yet due": (DateTrigger(NOW + timedelta(seconds=1), timezone="UTC"),
                          NOW + timedelta(seconds=1)),
    "exactly due": (IntervalTrigger(seconds=1, start_date=NOW, timezone="UTC"), NOW),
    "paused": (IntervalTrigger(seconds=1, timezone="UTC"), None),
}


@pytest.mark.parametrize("name", list(TRIGGERS))
def test_run_times_match_apschedulers_own(name: str) -> None:
    trigger, first = TRIGGERS[name]
    now = NOW + timedelta(hours=2) if "DST" in name else NOW
    one = job(trigger, first)
    seam(hasattr(one, "_get_run_times"), "Job._get_run_times",
         "it is gone: check scheduler/plan.py run_times against BaseScheduler._process_jobs")
    ours = run_times(one, now)
    assert ours == one._get_run_times(now)
    if name.endswith("missed"):
        assert len(ours) > 1 or name.startswith("date")
