"""The scheduler pass: each fire recorded once, each job moved on, a job changed meanwhile left
alone, and the first fire started here when a thread is free."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest

from scheduler_app.scheduler.firepass import FirePass
from scheduler_app.scheduler.jobspec import JobSpec
from scheduler_app.scheduler.jobstore import SpecJobStore
from scheduler_app.scheduler.runner import Runner
from scheduler_app.scheduler.wakeups import Wakeups
from scheduler_app.store import RunState, Store
from scheduler_app.store.notify import NoSignals
from scheduler_app.store.schema import runs
from scheduler_app.timeutil import utcnow
from tests.conftest import new_run, wait_for
from tests.tasks_for_tests import gates
from tests.unit.conftest import NODE


def add_job(store: Store, job_id: str, seconds_ago: float, *, every: float = 60,
            task: str = "demo.echo", kwargs: dict[str, Any] | None = None,
            **options: Any) -> Any:
    """An interval job whose next fire was ``seconds_ago`` seconds ago; returns that time."""
    due = utcnow().replace(microsecond=0) - timedelta(seconds=seconds_ago)
    spec = JobSpec(job_id, task, kwargs if kwargs is not None else {"value": 1},
                   {"type": "interval", "seconds": every, "start_date": due.isoformat()},
                   **options)
    store.jobs.insert(job_id, task, spec.to_json(), due)
    return due


def make_pass(store: Store, runner: Runner | None = None) -> FirePass:
    return FirePass(store, SpecJobStore(store.jobs, "UTC"), runner, NODE,
                    Wakeups(NoSignals(), NODE, runner), retry_backoff=1.0)


def test_a_pass_records_each_fire_once_and_moves_the_job_on(sqlite_store):
    due = add_job(sqlite_store, "a", seconds_ago=1)
    later = add_job(sqlite_store, "later", seconds_ago=-3600)
    fire_pass = make_pass(sqlite_store)
    assert fire_pass.run(utcnow()) == due + timedelta(seconds=60)
    assert fire_pass.run(utcnow()) == due + timedelta(seconds=60)  # again: nothing new
    [run] = sqlite_store.runs.find(job_id="a")
    assert (run.state, run.fire_time, run.task) == (RunState.QUEUED, due, "demo.echo")
    record = sqlite_store.jobs.get("a")
    assert (record.next_run_time, record.version) == (due + timedelta(seconds=60), 2)
    assert sqlite_store.jobs.get("later").next_run_time == later
    assert not sqlite_store.runs.find(job_id="later")


@pytest.mark.parametrize("coalesce, fires", [(True, 1), (False, 4)])
def test_missed_fires_follow_coalesce(sqlite_store, coalesce, fires):
    due = add_job(sqlite_store, "c", seconds_ago=3, every=1, coalesce=coalesce,
                  max_instances=10)
    make_pass(sqlite_store).run(due + timedelta(seconds=3.5))
    runs = sqlite_store.runs.find(job_id="c")
    assert len(runs) == fires
    assert max(r.fire_time for r in runs) == due + timedelta(seconds=3)


def test_a_job_changed_between_read_and_lock_is_not_overwritten(sqlite_store, monkeypatch):
    add_job(sqlite_store, "edited", seconds_ago=1)
    fire_pass = make_pass(sqlite_store)
    read = fire_pass.fires.due_jobs

    def read_then_pause(*args: Any, **kwargs: Any):
        rows = read(*args, **kwargs)
        record = sqlite_store.jobs.get("edited")  # an API call pauses it meanwhile
        sqlite_store.jobs.update("edited", record.task, record.spec, None)
        return rows

    monkeypatch.setattr(fire_pass.fires, "due_jobs", read_then_pause)
    assert fire_pass.run(utcnow()) is None  # the only job is paused now
    record = sqlite_store.jobs.get("edited")
    assert (record.next_run_time, record.version) == (None, 2)  # the pause stands
    assert not sqlite_store.runs.find(job_id="edited")


def test_a_fire_past_its_grace_time_is_counted_missed(sqlite_store, monkeypatch):
    counted = []
    monkeypatch.setattr(sqlite_store.stats, "record_misfire",
                        lambda job_id, task, fire_time: counted.append((job_id, task)))
    due = add_job(sqlite_store, "late", seconds_ago=30, misfire_grace_time=5)
    make_pass(sqlite_store).run(utcnow())
    assert counted == [("late", "demo.echo")]
    assert not sqlite_store.runs.find(job_id="late")
    assert sqlite_store.jobs.get("late").next_run_time == due + timedelta(seconds=60)


def test_a_row_that_cannot_be_loaded_is_skipped_not_deleted(sqlite_store):
    add_job(sqlite_store, "good", seconds_ago=1)
    sqlite_store.jobs.insert("broken", "demo.echo", {"task": "demo.echo"},
                             utcnow() - timedelta(seconds=5))
    fire_pass = make_pass(sqlite_store)
    upcoming = fire_pass.run(utcnow())
    assert "broken" in fire_pass.jobstore.broken
    assert sqlite_store.jobs.get("broken").version == 1
    assert len(sqlite_store.runs.find(job_id="good")) == 1
    assert upcoming == sqlite_store.jobs.get("good").next_run_time  # not the broken row's


def test_with_a_free_thread_the_first_fire_starts_here_and_the_rest_queue(
        make_runner, sqlite_store):
    gate = gates["unit-pass"] = threading.Event()
    try:
        runner, events = make_runner(capacity=1)
        for job_id in ("a", "b", "c"):
            add_job(sqlite_store, job_id, seconds_ago=1, task="testing.wait_gate",
                    kwargs={"gate": "unit-pass"})
        make_pass(sqlite_store, runner).run(utcnow())
        runs = sqlite_store.runs.find(limit=10)
        assert Counter(r.state for r in runs) == {RunState.RUNNING: 1, RunState.QUEUED: 2}
        [running] = [r for r in runs if r.state is RunState.RUNNING]
        assert running.node == NODE and runner.running == 1 and events.started == 1
        assert not runner.reserve()  # the one thread is the running fire's, nothing leaked
    finally:
        gate.set()
    wait_for(lambda: len(events.settled) == 3, message="the queued fires to run")
    # All threads free again, once a claim the last settle woke (which holds the free
    # threads while it looks) has found nothing.
    wait_for(runner.reserve, message="every thread to be free")


def test_with_no_free_thread_every_fire_is_queued(make_runner, sqlite_store):
    runner, events = make_runner(capacity=1, start=False)  # not accepting: no thread free
    add_job(sqlite_store, "a", seconds_ago=1)
    add_job(sqlite_store, "b", seconds_ago=1)
    make_pass(sqlite_store, runner).run(utcnow())
    runs = sqlite_store.runs.find(limit=10)
    assert [r.state for r in runs] == [RunState.QUEUED, RunState.QUEUED]
    assert events.started == 0


def test_a_thread_reserved_for_a_pass_that_starts_nothing_is_given_back(
        make_runner, sqlite_store):
    runner, events = make_runner(capacity=1)
    add_job(sqlite_store, "held", seconds_ago=1, max_instances=1)
    fire_pass = make_pass(sqlite_store, runner)
    fire_pass.run(utcnow())  # the first fire runs...
    wait_for(lambda: len(events.settled) == 1)
    with sqlite_store.db.write() as conn:  # ...and another run of the job is still active
        conn.execute(runs.update().values(state=RunState.QUEUED.value,
                                          scheduled_for=utcnow() + timedelta(hours=1)))
    record = sqlite_store.jobs.get("held")
    sqlite_store.jobs.update("held", record.task, record.spec, utcnow() - timedelta(seconds=1))
    fire_pass.run(utcnow())  # due again, but max_instances (1) is reached: nothing starts
    assert len(sqlite_store.runs.find(job_id="held")) == 1
    # The thread reserved for the pass is free again (a woken claim may hold it a moment).
    wait_for(runner.reserve, message="the pass's thread to be given back")


def test_a_fire_of_a_task_with_max_running_is_queued_for_the_claim_not_started_here(
        make_runner, sqlite_store):
    """max_running is counted only by the claim: a fire written already running here would
    go past it. With a run of the task (max_running=1) running on another node and a thread
    free here, the fire is queued, and it is still queued while that run goes on."""
    runner, events = make_runner(capacity=2)
    sqlite_store.runs.create(new_run(task="testing.single", kwargs={"seconds": 60}),
                             running_on="node-elsewhere")
    add_job(sqlite_store, "single", seconds_ago=1, task="testing.single",
            kwargs={"seconds": 0.01})
    make_pass(sqlite_store, runner).run(utcnow())
    [fire] = sqlite_store.runs.find(job_id="single")
    assert fire.state is RunState.QUEUED and fire.node is None
    assert events.started == 0
    wait_for(runner.reserve, message="the pass's thread to be given back")
