"""A scheduler pass: every due fire recorded and every due job moved on, in one transaction.

The store's promises (``FireStore``) are checked on SQLite and PostgreSQL alike; the loop's on
an app.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import sqlalchemy as sa

from scheduler_app.services import services
from scheduler_app.store import Database, JobRecord, NewRun, RunState, Store
from scheduler_app.store.fires import FireStore, JobFires, PassOutcome
from scheduler_app.store.schema import jobs
from scheduler_app.timeutil import utcnow
from tests.conftest import wait_for


def add_jobs(store: Store, count: int, due_at, prefix: str = "j") -> list[str]:
    ids = [f"{prefix}{i:03d}" for i in range(count)]
    for job_id in ids:
        store.jobs.insert(job_id, "demo.echo", {"task": "demo.echo"}, due_at)
    return ids


def fire_every(records: list[JobRecord], interval: float = 1.0, fires_per_job: int = 1,
               max_instances: int = 5) -> list[JobFires]:
    """Fire each job at its due time (``fires_per_job`` times, a second apart) and move it
    ``interval`` seconds on."""
    decided = []
    for record in records:
        assert record.next_run_time is not None
        runs = tuple(
            NewRun(task="demo.echo", kwargs={"value": 1}, max_attempts=1,
                   retry_backoff=1.0, timeout=None, scheduled_for=fire, job_id=record.id,
                   fire_time=fire)
            for fire in (record.next_run_time + timedelta(seconds=k)
                         for k in range(fires_per_job)))
        decided.append(JobFires(record.id, record.version, record.next_run_time + timedelta(
            seconds=interval), runs, max_instances))
    return decided


def fire_pass(fires: FireStore, **plan: Any) -> PassOutcome:
    """A pass as the loop makes one: read the due jobs, plan, record."""
    return fires.record(fire_every(fires.due_jobs(utcnow()), **plan))


def test_a_pass_records_every_due_fire_and_moves_every_job_on(store):
    due = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    ids = add_jobs(store, 30, due)
    later = add_jobs(store, 1, due + timedelta(hours=1), prefix="later")
    outcome = fire_pass(FireStore(store.runs))
    assert sorted(job_id for job_id, _ in outcome.recorded) == ids
    assert outcome.next_run_time == due + timedelta(seconds=1)
    for job_id in ids:
        runs = store.runs.find(job_id=job_id)
        assert [(r.state, r.fire_time) for r in runs] == [(RunState.QUEUED, due)]
        record = store.jobs.get(job_id)
        assert record.next_run_time == due + timedelta(seconds=1) and record.version == 2
    assert store.jobs.get(later[0]).version == 1
    assert not store.runs.find(job_id=later[0])


def test_a_pass_is_one_write_transaction(store, monkeypatch):
    add_jobs(store, 50, utcnow() - timedelta(seconds=1))
    writes = []
    real_write = store.db.write

    def counted(*args: Any, **kwargs: Any):
        writes.append(args)
        return real_write(*args, **kwargs)

    monkeypatch.setattr(store.db, "write", counted)
    outcome = fire_pass(FireStore(store.runs))
    assert len(outcome.recorded) == 50
    assert len(writes) == 1


def test_a_fire_already_recorded_is_skipped_and_the_job_still_moves_on(store):
    due = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    add_jobs(store, 1, due)
    fires = FireStore(store.runs)
    fire_pass(fires)
    with store.db.write() as conn:  # as if the job's row lost its advance: due again
        conn.execute(jobs.update().values(next_run_time=due.timestamp()))
    outcome = fire_pass(fires)
    assert outcome.recorded == []
    assert [(j, t, why) for j, t, why in outcome.skipped] == [("j000", due, "already recorded")]
    assert len(store.runs.find(job_id="j000")) == 1
    assert store.jobs.get("j000").next_run_time == due + timedelta(seconds=1)


def test_max_instances_counts_runs_in_the_database_and_in_the_pass(store):
    due = utcnow().replace(microsecond=0) - timedelta(seconds=10)
    add_jobs(store, 1, due)
    outcome = fire_pass(FireStore(store.runs), fires_per_job=3, max_instances=2)
    assert len(outcome.recorded) == 2
    assert [why for _, _, why in outcome.skipped] == ["max_instances (2) reached"]
    assert len(store.runs.find(job_id="j000")) == 2


def test_an_exhausted_job_is_removed(store):
    add_jobs(store, 1, utcnow() - timedelta(seconds=1))

    fires = FireStore(store.runs)
    outcome = fires.record([JobFires(item.job_id, item.version, None, item.runs,
                                     item.max_instances)
                            for item in fire_every(fires.due_jobs(utcnow()))])
    assert len(outcome.recorded) == 1
    assert store.jobs.get("j000") is None
    assert outcome.next_run_time is None


def test_jobs_left_out_are_untouched_and_not_the_next_wake_up(store):
    due = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    add_jobs(store, 2, due)
    store.jobs.insert("broken", "demo.echo", {"task": "demo.echo"}, due - timedelta(seconds=5))
    fires = FireStore(store.runs)
    records = fires.due_jobs(utcnow())
    assert [r.id for r in records] == ["broken", "j000", "j001"]  # oldest due first
    outcome = fires.record(fire_every([r for r in records if r.id != "broken"], interval=60),
                           skip=["broken"])
    assert len(outcome.recorded) == 2
    assert outcome.next_run_time == due + timedelta(seconds=60)  # not the broken job's time
    assert store.jobs.get("broken").version == 1
    assert fires.due_jobs(utcnow(), skip=["broken"]) == []
    assert fires.next_fire_time(skip=["broken"]) == due + timedelta(seconds=60)


def test_a_job_changed_since_it_was_read_is_left_to_the_next_pass(store):
    """A pause, edit or delete committed between the pass's read and its write wins."""
    due = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    add_jobs(store, 3, due)
    fires = FireStore(store.runs)
    planned = fire_every(fires.due_jobs(utcnow()))
    store.jobs.update("j000", "demo.echo", {"task": "demo.echo"}, None)  # paused meanwhile
    store.jobs.delete("j001")  # deleted meanwhile
    outcome = fires.record(planned)
    assert sorted(outcome.changed) == ["j000", "j001"]
    assert [job_id for job_id, _ in outcome.recorded] == ["j002"]
    paused = store.jobs.get("j000")
    assert paused.next_run_time is None and paused.version == 2
    assert store.jobs.get("j001") is None
    assert not store.runs.find(job_id="j000") and not store.runs.find(job_id="j001")
    assert outcome.next_run_time == due + timedelta(seconds=1)


def test_with_a_thread_waiting_the_first_fire_is_written_running_on_that_node(store):
    due = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    add_jobs(store, 3, due)
    fires = FireStore(store.runs)
    outcome = fires.record(fire_every(fires.due_jobs(utcnow())), start_on="node-a")
    assert outcome.started is not None
    assert (outcome.started.state, outcome.started.node) == (RunState.RUNNING, "node-a")
    assert outcome.started.started_at is not None and outcome.started.job_id == "j000"
    states = Counter(r.state for r in store.runs.find())
    assert states == {RunState.RUNNING: 1, RunState.QUEUED: 2}


def test_concurrent_passes_fire_each_due_fire_once(any_db_url):
    """Nodes waking at the same moment: every fire becomes exactly one run."""
    dbs = [Database(any_db_url) for _ in range(4)]
    try:
        dbs[0].migrate()
        store = Store(dbs[0])
        start = utcnow().replace(microsecond=0) - timedelta(seconds=5)
        ids = add_jobs(store, 20, start)
        passes = [FireStore(Store(db).runs) for db in dbs]
        recorded: list[tuple[str, Any]] = []
        lock = threading.Lock()
        barrier = threading.Barrier(len(passes))

        def node(fires: FireStore) -> None:
            for _ in range(5):
                barrier.wait()
                outcome = fire_pass(fires)
                with lock:
                    recorded.extend(outcome.recorded)

        threads = [threading.Thread(target=node, args=(f,)) for f in passes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        expected = {(job_id, start + timedelta(seconds=k)) for job_id in ids for k in range(5)}
        assert Counter(recorded) == Counter(expected)  # five grid points due, each once
        runs = store.runs.find(limit=1000)
        assert Counter((r.job_id, r.fire_time) for r in runs) == Counter(expected)
    finally:
        for db in dbs:
            db.dispose()


def test_a_job_being_edited_is_skipped_not_waited_for_on_postgresql(pg_url):
    db = Database(pg_url)
    db.migrate()
    store = Store(db)
    try:
        due = utcnow().replace(microsecond=0) - timedelta(seconds=1)
        add_jobs(store, 2, due)
        with db.engine.connect() as editor, editor.begin():
            editor.execute(sa.select(jobs.c.id).where(jobs.c.id == "j000").with_for_update())
            began = time.monotonic()
            outcome = fire_pass(FireStore(store.runs))
            assert time.monotonic() - began < 2
        assert [job_id for job_id, _ in outcome.recorded] == ["j001"]
        assert outcome.changed == ["j000"]
        assert store.jobs.get("j000").version == 1
    finally:
        db.dispose()


# -- the loop ----------------------------------------------------------------------------------
def test_many_jobs_due_together_fire_in_one_pass(make_app, monkeypatch):
    app = make_app(PRUNE_RUNS_CRON="", WORKER_THREADS=2)
    client = app.test_client()
    passes = []
    real = FireStore.record

    def counted(self: FireStore, planned: list[JobFires], *args: Any, **kwargs: Any):
        outcome = real(self, planned, *args, **kwargs)
        if outcome.recorded:
            passes.append(len(outcome.recorded))
        return outcome

    monkeypatch.setattr(FireStore, "record", counted)
    start = (utcnow().replace(microsecond=0) + timedelta(seconds=2)).isoformat()
    for i in range(20):
        assert client.post("/api/jobs", json={
            "id": f"tick-{i:02d}", "task": "demo.echo", "kwargs": {"value": i},
            "trigger": {"type": "interval", "seconds": 60, "start_date": start}}
        ).status_code == 201
    store = services(app).store
    wait_for(lambda: len([r for r in store.runs.find(limit=100) if r.job_id]) == 20,
             timeout=10, message="20 fires")
    # The pass appends after its transaction commits, so the rows may be seen first.
    wait_for(lambda: passes, timeout=10, message="the pass that recorded them to return")
    assert passes[0] == 20
    wait_for(lambda: all(r.state is RunState.SUCCEEDED for r in store.runs.find(limit=100)),
             message="every run to succeed")
    runs = store.runs.find(limit=100)
    assert len({r.fire_time for r in runs}) == 1
    assert all(r.job_id and r.started_at for r in runs)
