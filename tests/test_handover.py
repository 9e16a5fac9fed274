"""A finishing run's thread takes the next run over in its settle's transaction
(``RunStore.finish_and_claim``, ``Runner``): a run named by a wake-up by its id, else any due
run within every limit; on a real SQLite file and a real PostgreSQL database. The thread's
place passes from one run to the next, so a node never runs more than its threads, and a
backlog drains without a claim of the dispatcher's per run."""

from __future__ import annotations

from datetime import datetime, timedelta

from scheduler_app import start_scheduler
from scheduler_app.scheduler.runner import Runner
from scheduler_app.services import services
from scheduler_app.store import NewRun, NextClaim, RunState
from scheduler_app.timeutil import utcnow
from tests.conftest import new_run, wait_for

TASKS = frozenset({"demo.echo", "demo.sleep"})


def get(client, run_id: int) -> dict:
    return client.get(f"/api/runs/{run_id}").json


def running_on(store, node: str):
    return store.runs.create(new_run(), running_on=node)


def test_a_finish_takes_the_first_named_run_still_queued_in_its_own_transaction(store):
    finishing = running_on(store, "node-a")
    taken_elsewhere = running_on(store, "node-b")
    wanted = store.runs.create(new_run(scheduled_for=utcnow() - timedelta(seconds=2)))
    untried = store.runs.create(new_run())
    batches = store.runs.group.batches
    waits = store.stats.snapshot(lease_seconds=30).queue_wait["demo.echo"]

    handover = store.runs.finish_and_claim(
        finishing.id, "node-a", RunState.SUCCEEDED, result=1,
        claim_next=NextClaim(TASKS, {}, named=(taken_elsewhere.id, wanted.id, untried.id)))

    assert store.runs.group.batches == batches + 1  # one transaction for both
    assert handover.settled is not None and handover.settled.state is RunState.SUCCEEDED
    assert store.runs.get(finishing.id).result == 1
    assert handover.claimed is not None and handover.claimed.id == wanted.id
    assert handover.tried == 2  # the third was not needed: the caller offers it again
    assert (store.runs.get(wanted.id).state, store.runs.get(wanted.id).node) == \
        (RunState.RUNNING, "node-a")
    assert store.runs.get(taken_elsewhere.id).node == "node-b"
    assert store.runs.get(untried.id).state is RunState.QUEUED
    wait = store.stats.snapshot(lease_seconds=30).queue_wait["demo.echo"]
    # The taken run's wait, counted once, in the same transaction.
    assert wait.count == waits.count + 1 and 2 <= wait.sum - waits.sum < 10


def test_a_finish_with_a_full_look_takes_the_oldest_due_run_and_keeps_max_running(store):
    finishing = running_on(store, "node-a")
    running_on(store, "node-b")  # a demo.echo running elsewhere: at its cap of 1
    capped = store.runs.create(new_run(scheduled_for=utcnow() - timedelta(seconds=5)))
    later = store.runs.create(NewRun(task="demo.sleep", kwargs={"seconds": 0}, max_attempts=1,
                                     retry_backoff=1.0, timeout=None,
                                     scheduled_for=utcnow() - timedelta(seconds=1)))
    store.runs.create(NewRun(task="demo.sleep", kwargs={"seconds": 0}, max_attempts=1,
                             retry_backoff=1.0, timeout=None, scheduled_for=utcnow()))
    store.runs.create(new_run(task="demo.sleep", scheduled_for=utcnow() + timedelta(hours=1)))

    handover = store.runs.finish_and_claim(
        finishing.id, "node-a", RunState.SUCCEEDED,
        claim_next=NextClaim(TASKS, {"demo.echo": 1}, any_due=True))

    # The finish freed node-a's demo.echo, but node-b's still holds the cap: the oldest due
    # run of another task is taken instead, one run for the one thread.
    assert handover.claimed is not None and handover.claimed.id == later.id
    assert store.runs.get(capped.id).state is RunState.QUEUED
    assert len(store.runs.find(state=RunState.RUNNING)) == 2


def test_a_finish_takes_nothing_for_a_run_no_longer_its_own(store):
    """A run a reaper settled meanwhile is not this node's: its thread is not promised to
    it, so nothing is claimed for it and the named run stays queued."""
    finishing = running_on(store, "node-a")
    lost = {"type": "NodeLost", "message": "node-a stopped beating", "traceback": None}
    store.runs.finish(finishing.id, "node-a", RunState.FAILED, error=lost)
    queued = store.runs.create(new_run())
    handover = store.runs.finish_and_claim(
        finishing.id, "node-a", RunState.SUCCEEDED,
        claim_next=NextClaim(TASKS, {}, named=(queued.id,), any_due=True))
    assert (handover.settled, handover.claimed) == (None, None)
    assert store.runs.get(queued.id).state is RunState.QUEUED


def test_a_backlog_drains_thread_to_thread_without_a_claim_per_run(make_app, monkeypatch):
    """Runs queued by another node, one thread here: after the first claim each finishing
    run hands its thread to the next in its settle, so the dispatcher claims (a write
    transaction and a hop to the pool per run) once or twice for the whole backlog, and at
    no instant do two runs overlap."""
    claims: list[int] = []
    real_claim = Runner._claim

    def counted(self, look_first=True):
        outcome = real_claim(self, look_first)
        claims.append(outcome[1])
        return outcome

    monkeypatch.setattr(Runner, "_claim", counted)
    app = make_app(start=False, WORKER_THREADS=1, DISPATCH_POLL_SECONDS=0.2)
    client = app.test_client()
    store = services(app).store
    ids = [store.runs.create(new_run(kwargs={"value": i})).id for i in range(20)]
    start_scheduler(app)  # its first look finds the backlog
    wait_for(lambda: all(get(client, i)["state"] == "succeeded" for i in ids), timeout=15)

    assert sum(claims) <= 2, f"the dispatcher claimed {sum(claims)} of 20 runs"
    runs = sorted((get(client, i) for i in ids), key=lambda r: r["started_at"])
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert datetime.fromisoformat(later["started_at"]) >= \
            datetime.fromisoformat(earlier["finished_at"])


def test_a_run_taken_over_as_the_node_stops_goes_back_to_the_queue_unrun(make_app,
                                                                        monkeypatch):
    """Stopping begins while a settle claims the next run (``stop`` may already have asked
    the running runs to stop): that run is handed back, queued for another node, not run."""
    from scheduler_app.store.runs import RunStore

    app = make_app(start=False, WORKER_THREADS=1, DISPATCH_POLL_SECONDS=0.2)
    engine = services(app).scheduler
    store = services(app).store
    real = RunStore.finish_and_claim
    handed: list[int] = []

    def stopping_meanwhile(self, *args, **kwargs):
        handover = real(self, *args, **kwargs)
        if handover.claimed is not None and not handed:
            handed.append(handover.claimed.id)
            engine.runner._accepting = False  # what ``Runner.stop`` does first
        return handover

    monkeypatch.setattr(RunStore, "finish_and_claim", stopping_meanwhile)
    first, second = (store.runs.create(new_run(kwargs={"value": i})).id for i in range(2))
    start_scheduler(app)  # its first look claims the first run: one thread
    wait_for(lambda: store.runs.get(first).state is RunState.SUCCEEDED)
    wait_for(lambda: bool(handed) and engine.runner.running == 0)
    assert handed == [second]
    back = store.runs.get(second)
    assert (back.state, back.node, back.started_at, back.result) == \
        (RunState.QUEUED, None, None, None)


def test_a_settle_given_the_run_as_it_started_returns_the_row_as_stored(store):
    """Given the run as it started, a settle reads back only what may have changed since (a
    cancel asked for, progress); the run it returns is still the stored row, field for field,
    and the queue wait it was asked to count is counted once, from the attempt's start."""
    started = store.runs.create(new_run(kwargs={"value": {"nested": [1, 2]}}),
                                running_on="node-a", count_wait=False)
    store.runs.request_cancel(started.id)  # by someone else while it runs
    store.runs.save_progress(started.id, 3, 10, "three")
    before = store.stats.snapshot(lease_seconds=30).queue_wait.get("demo.echo")
    waits = 0 if before is None else before.count

    settled = store.runs.finish_and_claim(
        started.id, "node-a", RunState.CANCELLED, result={"kept": 1}, started=started,
        count_wait=True).settled

    assert settled is not None
    assert settled == store.runs.get(started.id)
    assert settled.cancel_requested and settled.progress_done == 3
    assert settled.progress_message == "three" and settled.result == {"kept": 1}
    assert store.stats.snapshot(lease_seconds=30).queue_wait["demo.echo"].count == waits + 1
    # Another node's run (or one no longer running) is not settled, whatever it was given.
    other = store.runs.create(new_run(), running_on="node-b")
    assert store.runs.finish_and_claim(other.id, "node-a", RunState.SUCCEEDED,
                                       started=other).settled is None


def test_a_run_taken_over_by_a_full_look_is_the_stored_row_field_for_field(store):
    """The taken run's row is converted after the commit (on SQLite, out of the writer's
    turn): it is still the run as stored, its arguments' JSON and its times included, and its
    queue wait is counted in the transaction that took it."""
    finishing = running_on(store, "node-a")
    due = store.runs.create(new_run(kwargs={"value": {"nested": [1, None, "x"]}},
                                    scheduled_for=utcnow() - timedelta(seconds=3)))
    waits = store.stats.snapshot(lease_seconds=30).queue_wait.get("demo.echo")

    handover = store.runs.finish_and_claim(
        finishing.id, "node-a", RunState.SUCCEEDED,
        claim_next=NextClaim(TASKS, {}, any_due=True))

    assert handover.claimed is not None and handover.claimed == store.runs.get(due.id)
    assert handover.claimed.kwargs == {"value": {"nested": [1, None, "x"]}}
    assert handover.claimed.state is RunState.RUNNING and handover.claimed.node == "node-a"
    wait = store.stats.snapshot(lease_seconds=30).queue_wait["demo.echo"]
    assert wait.count == (0 if waits is None else waits.count) + 1


def test_a_run_taken_over_that_cannot_be_read_back_ends_failed_not_running(tmp_path):
    """A queued run whose stored arguments are not JSON (changed by hand: PostgreSQL's JSON
    column refuses them, SQLite's text does not) is taken over, then cannot be read: it ends
    failed at once, saying why, instead of staying ``running`` with no thread to run it; the
    settle that took it over is kept, and the next run is taken as usual."""
    from scheduler_app.store.schema import runs
    from tests.conftest import migrated_store, queue_unreadable

    stores = migrated_store(f"sqlite:///{tmp_path / 'bad.sqlite3'}")
    store = next(stores)
    try:
        finishing = running_on(store, "node-a")
        bad = queue_unreadable(store)
        good = store.runs.create(new_run())

        handover = store.runs.finish_and_claim(
            finishing.id, "node-a", RunState.SUCCEEDED, result=7,
            claim_next=NextClaim(TASKS, {}, any_due=True))

        assert handover.settled is not None and handover.claimed is None
        assert store.runs.get(finishing.id).result == 7
        with store.db.engine.connect() as conn:
            state, error = conn.exec_driver_sql(
                f"SELECT state, json_extract(error, '$.type') FROM {runs.name} WHERE id = ?",
                (bad,)).one()
        assert (state, error) == ("failed", "UnreadableRun")
        assert store.stats.snapshot(lease_seconds=30).runs_finished[("demo.echo", "failed")] == 1
        taken = store.runs.finish_and_claim(
            running_on(store, "node-a").id, "node-a", RunState.SUCCEEDED,
            claim_next=NextClaim(TASKS, {}, any_due=True)).claimed
        assert taken is not None and taken.id == good.id
    finally:
        stores.close()
