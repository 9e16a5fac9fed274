"""The runner's rules: capacity, outcomes, and what each reason to stop a task means."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

import pytest

from scheduler_app.scheduler.runner import Runner
from scheduler_app.store import Run, RunState, Store
from tests.conftest import new_run, wait_for
from tests.tasks_for_tests import gates
from tests.unit.conftest import NODE, Events


def start_here(runner: Runner, store: Store, **fields: object) -> Run:
    """What the fast path does: reserve a thread, write the run claimed here, start it."""
    assert runner.reserve(), "no free thread"
    run = store.runs.create(new_run(**fields), running_on=NODE)
    runner.start_reserved(run)
    return run


def settled(events: Events, run: Run) -> Run:
    return wait_for(lambda: events.settled_run(run.id), message=f"run {run.id} to settle")


@pytest.fixture
def gate() -> threading.Event:
    event = gates["unit"] = threading.Event()
    yield event
    event.set()


def test_reservations_never_exceed_capacity(make_runner: Callable[..., tuple[Runner, Events]]):
    runner, _ = make_runner(capacity=2)
    assert runner.reserve() and runner.reserve()
    assert not runner.reserve()
    runner.release()
    assert runner.reserve()
    runner.release()
    runner.release()


def test_a_runner_not_started_reserves_nothing(make_runner):
    runner, _ = make_runner(start=False)
    assert not runner.reserve()


def test_a_queued_run_waits_for_a_thread_of_a_full_runner(make_runner, sqlite_store, gate):
    runner, events = make_runner(capacity=2)
    held = [start_here(runner, sqlite_store, task="testing.wait_gate", kwargs={"gate": "unit"})
            for _ in range(2)]
    assert runner.running == 2 and not runner.reserve()
    queued = sqlite_store.runs.create(new_run())
    runner.wake()
    gate.set()
    done = settled(events, queued)
    assert done.state is RunState.SUCCEEDED and done.node == NODE
    first_free = min(settled(events, run).finished_at for run in held)
    assert done.started_at >= first_free  # it never ran beside the two that held the threads
    assert events.started == 3


def test_a_task_that_raises_is_recorded_failed_with_its_traceback(make_runner, sqlite_store):
    runner, events = make_runner()
    run = settled(events, start_here(runner, sqlite_store, task="demo.fail",
                                     kwargs={"message": "disk full"}))
    assert run.state is RunState.FAILED
    assert (run.error["type"], run.error["message"]) == ("RuntimeError", "disk full")
    assert run.error["traceback"].startswith("Traceback")
    assert "raise RuntimeError(message)" in run.error["traceback"]


def test_a_result_json_cannot_carry_fails_the_run(make_runner, sqlite_store):
    runner, events = make_runner()
    run = settled(events, start_here(runner, sqlite_store, task="testing.not_json", kwargs={}))
    assert run.state is RunState.FAILED and run.error["type"] == "ResultNotJSON"


def test_a_cancel_request_ends_the_run_cancelled(make_runner, sqlite_store, gate):
    runner, events = make_runner()
    run = start_here(runner, sqlite_store, task="testing.wait_gate", kwargs={"gate": "unit"})
    assert runner.signal_cancel(run.id)
    assert settled(events, run).state is RunState.CANCELLED
    assert not runner.signal_cancel(run.id)  # no longer here


def test_a_run_past_its_timeout_fails_with_timeout(make_runner, sqlite_store):
    runner, events = make_runner()
    run = start_here(runner, sqlite_store, task="testing.stubborn", kwargs={"seconds": 5.0},
                     timeout=0.1)

    def timed_out() -> Run | None:
        runner.enforce_timeouts()  # what the node's maintenance thread does each tick
        return events.settled_run(run.id)

    done = wait_for(timed_out, message="the timeout")
    assert done.state is RunState.FAILED and done.error["type"] == "Timeout"
    assert done.finished_at - done.started_at < timedelta(seconds=2)


def test_a_run_stopped_by_shutdown_is_handed_back_not_failed(make_runner, sqlite_store, gate):
    runner, events = make_runner()
    run = start_here(runner, sqlite_store, task="testing.wait_gate", kwargs={"gate": "unit"})
    wait_for(lambda: runner.running == 1)
    runner.stop(grace=2)
    back = sqlite_store.runs.get(run.id)
    assert (back.state, back.node, back.attempt) == (RunState.QUEUED, None, 1)
    assert events.settled == []  # not an outcome: another node retries the same attempt


def test_a_runs_log_reads_in_the_order_its_lines_were_written(make_runner, sqlite_store, gate,
                                                              monkeypatch):
    """The tick's flush takes a run's first line and is slow to commit it (a busy group commit);
    meanwhile the task logs its last line and ends. The finish waits for that flush, so the
    first line is never stored after the last."""
    logged = gates["unit.logged"] = threading.Event()
    runner, events = make_runner()
    run = start_here(runner, sqlite_store, task="testing.log_around_gate",
                     kwargs={"gate": "unit"})
    assert logged.wait(5), "the task never logged its first line"

    flushing, release = threading.Event(), threading.Event()
    add_logs = sqlite_store.runs.add_logs

    def slow_add_logs(run_id, lines):
        lines = list(lines)
        flushing.set()
        release.wait(5)
        add_logs(run_id, lines)

    monkeypatch.setattr(sqlite_store.runs, "add_logs", slow_add_logs)
    flush = threading.Thread(target=runner.flush_all)
    flush.start()
    assert flushing.wait(5), "the flush never took the first line"
    gate.set()  # the task logs its last line and returns while the first is being written
    # Give an unordered finish every chance to commit first: it would within milliseconds.
    deadline = time.monotonic() + 1.0
    while events.settled_run(run.id) is None and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    flush.join(5)
    assert settled(events, run).state is RunState.SUCCEEDED
    assert [entry.message for entry in sqlite_store.runs.logs(run.id)] == [
        "before the gate", "after the gate"]


def test_a_task_registered_after_the_runner_started_is_claimed(sqlite_store):
    """The runner's names and caps of its tasks are kept between settles, and derived again
    after a registration: a task module imported after the node started is run."""
    from flask import Flask

    from scheduler_app.tasks import TaskRegistry

    tasks = TaskRegistry()
    tasks.register(lambda ctx: "early", name="late.early")
    events = Events()
    runner = Runner(Flask(__name__), sqlite_store, NODE, 2, poll_seconds=0.05,
                    max_log_lines=100, events=events, tasks=tasks)
    runner.start()
    try:
        assert runner.task_names() == {"late.early"}
        late = sqlite_store.runs.create(new_run(task="late.added", kwargs={}))
        runner.wake()
        early = sqlite_store.runs.create(new_run(task="late.early", kwargs={}))
        runner.wake()
        wait_for(lambda: sqlite_store.runs.get(early.id).state is RunState.SUCCEEDED)
        assert sqlite_store.runs.get(late.id).state is RunState.QUEUED  # not its task yet
        limits = runner.task_limits()
        limits["late.early"] = 1  # a copy: the runner's own view is not changed
        assert runner.task_limits() == {}
        tasks.register(lambda ctx: "late", name="late.added", max_running=1)
        assert runner.task_names() == {"late.early", "late.added"}
        assert runner.task_limits() == {"late.added": 1}
        runner.wake()
        wait_for(lambda: sqlite_store.runs.get(late.id).state is RunState.SUCCEEDED)
        assert sqlite_store.runs.get(late.id).result == "late"
    finally:
        runner.stop(grace=2)
