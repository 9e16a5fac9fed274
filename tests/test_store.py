"""The store's promises, checked on SQLite and on PostgreSQL alike."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from scheduler_app.store import Database, RunState
from scheduler_app.timeutil import utcnow
from tests.conftest import new_run, wait_for


def test_times_come_back_aware_utc(store):
    run = store.runs.create(new_run())
    again = store.runs.get(run.id)
    assert again.created_at.utcoffset() == timedelta(0)
    assert again.scheduled_for == run.scheduled_for


def test_concurrent_claims_never_share_a_run(store):
    for _ in range(40):
        store.runs.create(new_run())
    claimed: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def claim(node):
        barrier.wait()
        while True:
            got = store.runs.claim(node, 3, {})
            if not got:
                return
            with lock:
                claimed.extend(r.id for r in got)

    threads = [threading.Thread(target=claim, args=(f"n{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 40 and len(set(claimed)) == 40


def test_claim_respects_task_limits_and_due_time(store):
    for _ in range(3):
        store.runs.create(new_run(task="limited"))
    store.runs.create(new_run(task="later", scheduled_for=utcnow() + timedelta(hours=1)))
    store.runs.create(new_run(task="free"))
    got = store.runs.claim("n", 10, {"limited": 2})
    assert sorted(r.task for r in got) == ["free", "limited", "limited"]
    assert store.runs.claim("n", 10, {"limited": 2}) == []


def test_failure_with_attempts_left_is_requeued_with_backoff(store):
    run = store.runs.create(new_run(max_attempts=2, retry_backoff=10))
    store.runs.claim("n", 1, {})
    error = {"type": "ValueError", "message": "x", "traceback": None}
    settled = store.runs.finish(run.id, "n", RunState.FAILED, error=error)
    assert settled.state is RunState.QUEUED and settled.attempt == 2
    assert settled.scheduled_for > utcnow() + timedelta(seconds=9)
    assert settled.errors[0]["attempt"] == 1


def test_finish_by_a_node_that_no_longer_owns_the_run_changes_nothing(store):
    run = store.runs.create(new_run())
    store.runs.claim("a", 1, {})
    assert store.runs.finish(run.id, "b", RunState.SUCCEEDED, result=1) is None
    assert store.runs.get(run.id).state is RunState.RUNNING


def test_settle_lost_marks_runs_of_silent_nodes(store):
    store.nodes.register("dead", "h", 1, "all", 4)
    store.nodes.register("alive", "h", 2, "all", 4)
    a = store.runs.create(new_run())
    store.runs.claim("dead", 1, {})
    b = store.runs.create(new_run())
    store.runs.claim("alive", 1, {})
    from scheduler_app.store.schema import nodes
    with store.db.write() as conn:
        conn.execute(nodes.update().where(nodes.c.id == "dead")
                     .values(heartbeat_at=utcnow() - timedelta(minutes=1)))
    settled = store.runs.settle_lost(utcnow() - timedelta(seconds=30))
    assert [r.id for r in settled] == [a.id]
    assert store.runs.get(a.id).error["type"] == "NodeLost"
    assert store.runs.get(b.id).state is RunState.RUNNING


def test_job_compare_and_set(store):
    store.jobs.insert("j", "demo.echo", {"name": "j"}, utcnow())
    record = store.jobs.get("j")
    assert store.jobs.update("j", "demo.echo", {"name": "j2"}, None,
                             expected_version=record.version)
    assert not store.jobs.advance("j", utcnow(), record.version)  # stale writer loses
    assert store.jobs.get("j").next_run_time is None


def test_prune_keeps_active_and_recent_runs(store):
    old = store.runs.create(new_run())
    store.runs.claim("n", 1, {})
    store.runs.finish(old.id, "n", RunState.SUCCEEDED, result=1)
    store.runs.add_logs(old.id, [(utcnow(), "INFO", "x")])
    queued = store.runs.create(new_run(scheduled_for=utcnow() + timedelta(days=1)))
    assert store.runs.prune(utcnow() + timedelta(seconds=1)) == 1
    assert store.runs.get(old.id) is None and store.runs.logs(old.id) == []
    assert store.runs.get(queued.id) is not None


def test_a_new_connection_waits_for_another_process_to_finish_before_wal(tmp_path):
    """Workers starting together: one holds the file mid-transaction while another connects.
    The newcomer must wait and switch the file to WAL, not fail with 'database is locked'."""
    import sqlite3

    path = tmp_path / "fresh.sqlite3"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE held (x INTEGER)")
    released = threading.Timer(0.3, lambda: holder.execute("COMMIT"))
    released.start()
    db = Database(f"sqlite:///{path}")
    try:
        with db.read() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
    finally:
        released.join()
        holder.close()
        db.dispose()


@pytest.mark.parametrize("running_on", [None, "node-a"])
def test_a_created_run_is_exactly_what_reading_it_back_gives(store, running_on):
    """create() builds the Run from what it wrote (only the id is read back): it must be
    the same value a later read gives, time zones and JSON included."""
    from datetime import timezone

    east = timezone(timedelta(hours=5, minutes=30))
    new = new_run(kwargs={"nested": {"list": [1, 2.5, None, "é"]}, "flag": True},
                  scheduled_for=utcnow().astimezone(east), timeout=12.5,
                  job_id="j1", fire_time=utcnow().astimezone(east))
    created = store.runs.create(new, running_on=running_on)
    assert created == store.runs.get(created.id)


def test_postgresql_a_pooled_connection_the_server_dropped_is_replaced_unseen(pg_url):
    """The pool hands out no connection whose session the server ended (a restart, a
    terminated backend): the next transaction works, on a new session."""
    db = Database(pg_url, pool_size=1)
    admin = sa.create_engine(pg_url, isolation_level="AUTOCOMMIT")

    def backend_alive(pid: int) -> bool:
        with admin.connect() as conn:
            return conn.execute(sa.text("SELECT 1 FROM pg_stat_activity WHERE pid = :pid"),
                                {"pid": pid}).first() is not None
    try:
        with db.read() as conn:
            before = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"),
                                {"pid": before}).scalar_one()
        wait_for(lambda: not backend_alive(before), message="the backend to end")
        with db.read() as conn:
            after = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        assert after != before
    finally:
        admin.dispose()
        db.dispose()
