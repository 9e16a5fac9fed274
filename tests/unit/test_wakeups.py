"""Wake-ups between two nodes of one process on one SQLite file (real sockets beside it), with
a 5 s poll: only a wake-up explains a hand-off within a second."""

from __future__ import annotations

import time

from scheduler_app.store import RunState
from tests.conftest import new_run, wait_for

SLOW = {"poll_seconds": 5.0}


def asleep(*engines) -> None:
    """Wait for each engine's run dispatcher to have looked at the queue once: from then on
    only a wake-up or its poll makes it look again."""
    for engine in engines:
        wait_for(lambda engine=engine: engine.runner.looks >= 1,
                 message="the dispatcher's first look")


def loop_asleep(engine) -> None:
    """Wait for the engine's scheduler loop to have made its first pass (finding no job, it
    then sleeps its poll)."""
    wait_for(lambda: engine.loop_passes >= 1, message="the scheduler loop's first pass")


def test_a_run_queued_on_a_web_node_is_claimed_by_a_worker_at_once(make_engine, sqlite_store):
    web = make_engine(role="web", **SLOW)
    worker = make_engine(**SLOW)
    worker.start(as_worker=True)
    web.start()
    asleep(worker)  # it sleeps on its 5 s poll
    run = sqlite_store.runs.create(new_run(kwargs={"value": 1}))
    web.runs_queued()
    done = wait_for(lambda: (r := sqlite_store.runs.get(run.id)).is_final and r, timeout=2)
    assert done.state is RunState.SUCCEEDED and done.node == worker.node.id


def test_a_retry_is_taken_at_once_not_at_the_next_poll(make_engine, sqlite_store):
    first = make_engine(**SLOW)
    other = make_engine(**SLOW)
    first.start()
    other.start()
    asleep(first, other)
    run = first.run_here(new_run(task="testing.flaky", kwargs={"succeed_on_attempt": 2},
                                 max_attempts=2, retry_backoff=0.05))
    assert run is not None
    done = wait_for(lambda: (r := sqlite_store.runs.get(run.id)).is_final and r, timeout=2)
    assert (done.state, done.attempt) == (RunState.SUCCEEDED, 2)


def test_with_wakeups_off_a_worker_waits_for_its_poll(make_engine, sqlite_store):
    web = make_engine(role="web", poll_seconds=1.0, wakeups=False)
    worker = make_engine(poll_seconds=1.0, wakeups=False)
    worker.start(as_worker=True)
    web.start()
    asleep(worker)
    run = sqlite_store.runs.create(new_run(kwargs={"value": 1}))
    queued = time.monotonic()
    web.runs_queued()
    done = wait_for(lambda: (r := sqlite_store.runs.get(run.id)).is_final and r, timeout=3)
    assert done.state is RunState.SUCCEEDED
    assert time.monotonic() - queued > 0.2  # the poll took it, not a wake-up


def test_a_node_that_cannot_listen_starts_and_polls(make_engine, sqlite_store, caplog):
    blocker = sqlite_store.db.url.database + ".wakeups"
    with open(blocker, "w") as f:  # a file where the sockets' folder would go
        f.write("not a folder")
    worker = make_engine(poll_seconds=0.2)
    worker.start(as_worker=True)
    run = sqlite_store.runs.create(new_run(kwargs={"value": 3}))
    worker.runs_queued()
    done = wait_for(lambda: (r := sqlite_store.runs.get(run.id)).is_final and r, timeout=3)
    assert (done.state, done.result) == (RunState.SUCCEEDED, 3)
    assert "wake-ups off for node" in caplog.text


def test_a_named_run_of_a_task_capped_here_gets_a_full_claim(make_engine, sqlite_store):
    """A wake-up names a run due now; the worker caps its task (``max_running``), so it takes
    it through the full, counted claim rather than by its id, at once all the same."""
    web = make_engine(role="web", **SLOW)
    worker = make_engine(**SLOW)
    worker.start(as_worker=True)
    web.start()
    asleep(worker)
    run = sqlite_store.runs.create(new_run(task="testing.single", kwargs={"seconds": 0.01}))
    web.runs_queued(run)
    done = wait_for(lambda: (r := sqlite_store.runs.get(run.id)).is_final and r, timeout=2)
    assert done.state is RunState.SUCCEEDED and done.node == worker.node.id


def test_a_malformed_named_wake_up_still_makes_the_worker_look(make_engine, sqlite_store):
    worker = make_engine(**SLOW)
    worker.start(as_worker=True)
    asleep(worker)
    run = sqlite_store.runs.create(new_run(kwargs={"value": 2}))
    worker.node.wakeups._heard("runs another-node not-a-number demo.echo")
    done = wait_for(lambda: (r := sqlite_store.runs.get(run.id)).is_final and r, timeout=2)
    assert done.state is RunState.SUCCEEDED


def test_a_job_written_on_a_web_node_fires_on_a_worker_without_waiting_for_its_poll(
        make_engine, sqlite_store):
    """The worker's loop, finding no job, sleeps its 5 s poll; a job due in 0.3 s added on the
    web node wakes it to re-read the schedule, so the fire is recorded on time."""
    from datetime import timedelta

    from scheduler_app.scheduler.jobspec import JobSpec
    from scheduler_app.timeutil import utcnow

    web = make_engine(role="web", **SLOW)
    worker = make_engine(**SLOW)
    worker.start(as_worker=True)
    web.start()
    loop_asleep(worker)  # its first pass found no job: it sleeps on its 5 s poll
    due = utcnow() + timedelta(seconds=0.3)
    spec = JobSpec("soon", "demo.echo", {"value": 7},
                   {"type": "interval", "seconds": 3600, "start_date": due.isoformat()})
    sqlite_store.jobs.insert("soon", "demo.echo", spec.to_json(), due)
    web.jobs_changed()
    [run] = wait_for(lambda: sqlite_store.runs.find(job_id="soon"), timeout=2.5,
                     message="the job's fire to be recorded")
    assert abs((run.fire_time - due).total_seconds()) < 1.0
    assert (run.created_at - due).total_seconds() < 2.0


def test_a_listener_back_from_a_lost_connection_rereads_the_schedule(make_engine, sqlite_store):
    """A job written while a node's listener was down told that node nothing; the listener's
    HELLO on reconnecting makes its loop re-read the schedule, not wait for its 5 s poll."""
    from datetime import timedelta

    from scheduler_app.scheduler.jobspec import JobSpec
    from scheduler_app.store.notify import HELLO
    from scheduler_app.timeutil import utcnow

    worker = make_engine(**SLOW)
    worker.start(as_worker=True)
    loop_asleep(worker)  # its first pass found no job: it sleeps on its 5 s poll
    due = utcnow() + timedelta(seconds=0.3)
    spec = JobSpec("missed", "demo.echo", {"value": 8},
                   {"type": "interval", "seconds": 3600, "start_date": due.isoformat()})
    sqlite_store.jobs.insert("missed", "demo.echo", spec.to_json(), due)  # no wake-up sent
    worker.node.wakeups._heard(HELLO)
    [run] = wait_for(lambda: sqlite_store.runs.find(job_id="missed"), timeout=2.5,
                     message="the job's fire to be recorded")
    assert abs((run.fire_time - due).total_seconds()) < 1.0
    assert (run.created_at - due).total_seconds() < 2.0
