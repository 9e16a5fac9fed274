"""The engine holds APScheduler: it touches nothing of the host app, shows none of
Flask-APScheduler's surface, and its run-now path never runs past capacity."""

from __future__ import annotations

import threading

import pytest
from apscheduler.schedulers.base import STATE_PAUSED, STATE_RUNNING
from flask import Flask

from scheduler_app.store import Run, RunState
from tests.conftest import new_run, wait_for
from tests.tasks_for_tests import gates


def test_building_and_starting_touches_nothing_of_the_app(make_engine):
    app = Flask(__name__)
    config = dict(app.config)
    engine = make_engine(app)
    engine.start()
    assert dict(app.config) == config
    assert not hasattr(app, "apscheduler")
    for inherited in ("add_job", "run_job", "task", "init_app", "scheduler", "get_jobs"):
        assert not hasattr(engine, inherited), inherited


def test_run_now_with_no_free_thread_returns_none_and_writes_nothing(make_engine,
                                                                     sqlite_store):
    engine = make_engine(worker_threads=1)
    new = new_run(task="testing.wait_gate", kwargs={"gate": "unit-engine"})
    assert engine.run_here(new) is None  # not started: nothing runs here yet
    engine.start()
    gates["unit-engine"] = threading.Event()
    try:
        first = engine.run_here(new)
        assert first is not None and first.node == engine.node.id
        assert engine.run_here(new) is None
        assert [r.id for r in sqlite_store.runs.find(limit=10)] == [first.id]
    finally:
        gates["unit-engine"].set()
    wait_for(lambda: sqlite_store.runs.get(first.id).state is RunState.SUCCEEDED)


def test_a_failing_create_gives_its_thread_back(make_engine, sqlite_store, monkeypatch):
    engine = make_engine(worker_threads=1)
    engine.start()

    def create(*args: object, **kwargs: object) -> Run:
        raise RuntimeError("database down")

    monkeypatch.setattr(sqlite_store.runs, "create", create)
    with pytest.raises(RuntimeError):
        engine.run_here(new_run())
    assert engine.runner is not None and engine.runner.reserve()  # the thread is free again
    engine.runner.release()


def test_a_web_node_writes_jobs_but_never_fires_or_executes(make_engine, sqlite_store):
    engine = make_engine(role="web")
    engine.start()
    assert engine.runner is None and engine.state == STATE_PAUSED
    assert engine.run_here(new_run()) is None
    assert sqlite_store.runs.find(limit=1) == []
    with pytest.raises(ValueError):
        make_engine(role="web").start(as_worker=True)


def test_a_worker_start_registers_a_worker_node(make_engine, sqlite_store):
    engine = make_engine()
    engine.start(as_worker=True)
    assert engine.started and engine.loop_running and engine.state == STATE_RUNNING
    assert [n.role for n in sqlite_store.nodes.all()] == ["worker"]
    engine.shutdown()
    assert not engine.started and not engine.loop_running


def test_run_here_writes_the_run_claimed_by_this_node(make_engine, sqlite_store):
    engine = make_engine(worker_threads=1)
    engine.start()
    run = engine.run_here(new_run(kwargs={"value": 7}))
    assert run is not None and run.node == engine.node.id and run.started_at is not None
    done = wait_for(lambda: (r := sqlite_store.runs.get(run.id)).is_final and r)
    assert (done.state, done.result) == (RunState.SUCCEEDED, 7)


def test_shutdown_stops_running_tasks_even_when_the_loop_is_stuck_in_a_pass(
        make_engine, sqlite_store, monkeypatch):
    """A fire pass blocked (on a database another process holds locked, say) must not keep
    the node from asking its running tasks to stop and handing their runs back: APScheduler
    would wait for its thread with no limit, and the process would never exit."""
    engine = make_engine(shutdown_grace_seconds=0.3)
    stuck, release = threading.Event(), threading.Event()
    fire_pass = engine._loop.fire_pass
    original = fire_pass.run

    def blocked_pass(now):
        if engine.started and not release.is_set():
            stuck.set()
            release.wait(30)
            return None  # the store may be closed by now: touch nothing
        return original(now)

    monkeypatch.setattr(fire_pass, "run", blocked_pass)
    engine.start()
    try:
        run = engine.run_here(new_run(task="demo.sleep", kwargs={"seconds": 30, "steps": 300}))
        assert run is not None
        assert stuck.wait(5), "the loop never entered a pass"
        stopper = threading.Thread(target=engine.shutdown)
        stopper.start()
        stopper.join(10)
        assert not stopper.is_alive(), "shutdown waited for the stuck pass"
        back = sqlite_store.runs.get(run.id)
        assert (back.state, back.node, back.attempt) == (RunState.QUEUED, None, 1)
    finally:
        release.set()
        # The pass left behind must end before the store's connections are closed under it.
        loop_thread = engine._loop._thread
        if loop_thread is not None:
            loop_thread.join(5)


def test_run_now_on_an_idle_node_answers_once_the_runs_thread_has_begun(make_engine,
                                                                        monkeypatch):
    """As ``threading.Thread.start``: the run's thread gets the interpreter before the
    request goes on to build its answer, so the task starts first."""
    from scheduler_app.scheduler.runner import Runner

    entered = threading.Event()
    real_execute = Runner._execute

    def execute(self, run, ctx, began=None):
        entered.set()
        return real_execute(self, run, ctx, began)

    monkeypatch.setattr(Runner, "_execute", execute)
    engine = make_engine(worker_threads=2)
    engine.start()
    for _ in range(5):
        entered.clear()
        run = engine.run_here(new_run())
        assert run is not None and entered.is_set()
        wait_for(lambda: engine.runner is not None and engine.runner.running == 0)
