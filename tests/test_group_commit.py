"""Group commit and the SQLite writer lock: shared transactions that still fail one by one."""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sqlite3
import threading

import pytest
import sqlalchemy as sa

from scheduler_app.errors import QueueFull
from scheduler_app.store import Database, RunState, Store
from scheduler_app.store import group as group_module
from scheduler_app.store.group import GroupCommit
from scheduler_app.store.schema import runs, stats
from scheduler_app.timeutil import utcnow

from .conftest import migrated_store, new_run, wait_for


def insert(key, then=None):
    """An operation writing one run tagged ``key``; ``then`` runs after the write."""
    def operation(conn, tally):
        run_id = conn.execute(runs.insert().values(
            task="demo.echo", kwargs={"key": key}, state="queued", attempt=1, max_attempts=1,
            retry_backoff=1.0, cancel_requested=False, errors=[], created_at=utcnow(),
            scheduled_for=utcnow())).inserted_primary_key[0]
        tally.finished("demo.echo", "grouped")
        if then is not None:
            then()
        return run_id
    return operation


def keys(db):
    with db.read() as conn:
        return sorted(r.kwargs["key"] for r in conn.execute(sa.select(runs.c.kwargs)))


def start_behind_leader(group, operations):
    """Hold a leader inside its transaction until every operation has queued behind it; return
    the threads and a dict of what each caller got (value or exception)."""
    inside, release = threading.Event(), threading.Event()
    outcomes = {}

    def call(name, operation):
        try:
            outcomes[name] = group.run(operation)
        except Exception as exc:
            outcomes[name] = exc

    def hold():
        inside.set()
        release.wait()

    leader = threading.Thread(target=call, args=("leader", insert("leader", hold)))
    leader.start()
    assert inside.wait(10), "the leader never ran its operation"
    threads = [threading.Thread(target=call, args=(name, op)) for name, op in operations]
    for t in threads:
        t.start()
    wait_for(lambda: len(group._queue) == len(operations), message="followers to queue")
    release.set()
    for t in [leader, *threads]:
        t.join(10)
    return outcomes


def test_writes_queued_behind_a_commit_share_the_next_transaction(store, signal):
    group = GroupCommit(store.db)
    outcomes = start_behind_leader(group, [(f"f{i}", insert(f"f{i}")) for i in range(5)])
    assert all(isinstance(v, int) for v in outcomes.values()), outcomes
    assert len(set(outcomes.values())) == 6
    assert keys(store.db) == ["f0", "f1", "f2", "f3", "f4", "leader"]
    # The leader's own transaction, then one for the five that waited behind it.
    assert (group.batches, group.operations) == (2, 6)
    with store.db.read() as conn:
        counted = conn.execute(sa.select(stats.c.value).where(
            stats.c.label == "grouped")).scalar_one()
    assert counted == 6  # the batch's statistics are flushed in its transaction


def test_writes_queued_while_the_leader_waits_for_the_file_join_its_transaction(db_url):
    """On SQLite the leader takes in what queued while another writer (another process) had
    the file: one commit for all of them, not one for it and one for the rest."""
    stores = migrated_store(db_url)
    store = next(stores)
    group = GroupCommit(store.db)
    outcomes = {}

    def call(name):
        outcomes[name] = group.run(insert(name))

    other = Database(db_url)  # another process's writer: its own lock file descriptor
    try:
        with other.write():  # it has the file
            leader = threading.Thread(target=call, args=("leader",))
            leader.start()
            wait_for(lambda: group._committing, message="the leader to start committing")
            followers = [threading.Thread(target=call, args=(f"f{i}",)) for i in range(3)]
            for t in followers:
                t.start()
            wait_for(lambda: len(group._queue) == 3, message="followers to queue")
        for t in [leader, *followers]:
            t.join(10)
        assert sorted(outcomes) == ["f0", "f1", "f2", "leader"]
        assert keys(store.db) == ["f0", "f1", "f2", "leader"]
        assert (group.batches, group.operations) == (1, 4)
    finally:
        other.dispose()
        stores.close()


def test_a_failing_write_fails_alone_and_leaves_nothing_behind(store, signal):
    group = GroupCommit(store.db)

    def broken():
        raise ValueError("task bug after its write")

    outcomes = start_behind_leader(group, [
        ("good1", insert("good1")), ("bad", insert("bad", broken)), ("good2", insert("good2"))])
    assert isinstance(outcomes["bad"], ValueError)
    assert isinstance(outcomes["good1"], int) and isinstance(outcomes["good2"], int)
    assert keys(store.db) == ["good1", "good2", "leader"]  # "bad" was rolled back


def test_a_full_queue_refuses_only_the_run_past_the_limit(store):
    """Queued creates joining one batch count each other: a limit of 2 admits two of three."""
    group = store.runs.group

    def create(name):
        return lambda conn, tally: store.runs._insert(
            conn, tally, new_run(kwargs={"key": name}), 2, None)

    outcomes = start_behind_leader(group, [("a", create("a")), ("b", create("b")),
                                           ("c", create("c"))])
    # The leader's run and "a" fill the limit; "b" and "c" are refused.
    assert sum(isinstance(v, QueueFull) for v in outcomes.values()) == 2
    with store.db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs).where(
            runs.c.state == "queued")).scalar_one() == 2
    assert "leader" in keys(store.db)


def test_run_store_writes_join_the_group_and_return_committed_rows(store):
    run = store.runs.create(new_run(), running_on="node-a")
    assert run.state is RunState.RUNNING and run.node == "node-a"
    done = store.runs.finish(run.id, "node-a", RunState.SUCCEEDED, result={"ok": True})
    assert done is not None and done.result == {"ok": True}
    # Committed: another connection (a fresh store on the same database) reads it back.
    other = Database(str(store.db.url.render_as_string(hide_password=False)))
    try:
        assert Store(other).runs.get(run.id).state is RunState.SUCCEEDED
    finally:
        other.dispose()
    assert store.runs.finish(run.id, "node-a", RunState.SUCCEEDED) is None  # settled already


@pytest.fixture(params=["eventfd", "lock"])
def signal(request, monkeypatch):
    """How a waiting thread is woken: an eventfd where the platform has one (Linux), else a
    lock; the group commit must behave the same on both."""
    if request.param == "eventfd" and not hasattr(os, "eventfd"):
        pytest.skip("this platform has no eventfd")  # pragma: no cover - Linux has it
    monkeypatch.setattr(group_module, "_Signal", group_module._EventfdSignal
                        if request.param == "eventfd" else group_module._LockSignal)
    return request.param


class CountedEventfds:
    """Counts the eventfds the group commit makes and closes, its own only: counting the
    process's open eventfds instead would also see other tests' threads end meanwhile."""

    def __init__(self, monkeypatch):
        self.made = self.closed = 0
        counter = self
        base = group_module._ThreadEventfd

        class Counted(base):
            def __init__(self):
                super().__init__()
                counter.made += 1

            def __del__(self):
                super().__del__()
                counter.closed += 1

        monkeypatch.setattr(group_module, "_ThreadEventfd", Counted)


def test_concurrent_creates_and_finishes_lose_nothing(store, signal, monkeypatch):
    errors = []
    eventfds = CountedEventfds(monkeypatch)
    monkeypatch.setattr(group_module, "_thread_eventfd", threading.local())  # none made yet

    def work(worker):
        try:
            for i in range(25):
                run = store.runs.create(new_run(kwargs={"key": f"{worker}-{i}"}),
                                        running_on=f"n{worker}")
                assert store.runs.finish(run.id, f"n{worker}", RunState.SUCCEEDED) is not None
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with store.db.read() as conn:
        states = dict(conn.execute(sa.select(runs.c.state, sa.func.count())
                                   .group_by(runs.c.state)).all())
    assert states == {"succeeded": 200}
    assert store.runs.group.operations == 400
    # Each thread slept on one eventfd of its own (not one per operation), closed when the
    # thread ended; with a lock, none.
    assert eventfds.made == (len(threads) if signal == "eventfd" else 0)
    assert eventfds.closed == eventfds.made


def _child_signal(parent_fd, answer):
    signal = group_module._EventfdSignal()
    answer.put((signal._owned.pid == os.getpid(), signal._owned.fd != parent_fd))


@pytest.mark.skipif(not hasattr(os, "eventfd"), reason="this platform has no eventfd")
def test_a_forked_child_sleeps_on_an_eventfd_of_its_own():
    """A worker forked from a process whose thread already waited (gunicorn's preloading
    master) must not share that eventfd: a wake-up meant for one would wake the other."""
    parent = group_module._EventfdSignal()._owned
    context = multiprocessing.get_context("fork")
    answer = context.Queue()
    child = context.Process(target=_child_signal, args=(parent.fd, answer))
    child.start()
    try:
        assert answer.get(timeout=20) == (True, True)
    finally:
        child.join(20)
    assert group_module._EventfdSignal()._owned is parent  # the parent's thread keeps its own


def _hammer(url: str, worker: int, count: int, failures, ready, go) -> None:
    db = Database(url)

    @sa.event.listens_for(db.engine, "connect")
    def no_patience(dbapi_conn, _record):  # after the app's own listener: never wait
        dbapi_conn.execute("PRAGMA busy_timeout=0")

    try:
        db.ping()
        ready.release()
        go.wait(30)  # all processes write at once
        for i in range(count):
            with db.write() as conn:
                conn.execute(runs.insert().values(
                    task="demo.echo", kwargs={"key": f"{worker}-{i}"}, state="queued",
                    attempt=1, max_attempts=1, retry_backoff=1.0, cancel_requested=False,
                    errors=[], created_at=utcnow(), scheduled_for=utcnow()))
    except Exception as exc:
        failures.put(f"{worker}: {exc}")
    finally:
        db.dispose()


def test_processes_writing_one_sqlite_file_queue_on_the_lock_file(tmp_path):
    """With SQLite's busy timeout at zero, any writer meeting another's lock would fail at
    once ("database is locked"): the lock file makes them wait their turn instead."""
    url = f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    db = Database(url)
    db.migrate()
    ctx = multiprocessing.get_context("spawn")
    failures, ready, go = ctx.Queue(), ctx.Semaphore(0), ctx.Event()
    procs = [ctx.Process(target=_hammer, args=(url, w, 300, failures, ready, go))
             for w in range(3)]
    for p in procs:
        p.start()
    for _ in procs:
        assert ready.acquire(timeout=60)
    go.set()
    for p in procs:
        p.join(60)
    problems = []
    while not failures.empty():
        problems.append(failures.get())
    assert problems == []
    assert all(p.exitcode == 0 for p in procs)
    with db.read() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one() == 900
    db.dispose()


def test_the_write_ahead_log_is_copied_back_in_the_background(tmp_path):
    """No commit pays for the checkpoint: a background thread copies the log into the
    database file (below SQLite's own threshold, nothing else would) and stops on dispose."""
    path = tmp_path / "checkpointed.sqlite3"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    before = path.stat().st_size
    for i in range(200):
        with db.write() as conn:
            conn.execute(runs.insert().values(
                task="demo.echo", kwargs={"key": i, "pad": "x" * 2000}, state="queued",
                attempt=1, max_attempts=1, retry_backoff=1.0, cancel_requested=False,
                errors=[], created_at=utcnow(), scheduled_for=utcnow()))
    wait_for(lambda: path.stat().st_size > before + 200 * 2000,
             message="the log to be copied into the database file")
    checkpointer = db._checkpointer
    db.dispose()
    assert checkpointer is not None and not checkpointer._thread.is_alive()


def test_a_poll_reads_what_an_ordinary_read_reads(store):
    """Database.poll (a driver connection per thread on SQLite) gives the same typed value as
    a read through SQLAlchemy: aware UTC times, None when there is nothing."""
    from scheduler_app.store.runs import _NEXT_DUE

    assert store.db.poll(_NEXT_DUE) is None
    due = utcnow().replace(microsecond=123456)
    store.runs.create(new_run(scheduled_for=due))
    with store.db.read() as conn:
        expected = conn.execute(_NEXT_DUE).scalar()
    assert store.db.poll(_NEXT_DUE) == expected == due
    assert store.db.poll(_NEXT_DUE).utcoffset() is not None
    seen = []
    thread = threading.Thread(target=lambda: seen.append(store.db.poll(_NEXT_DUE)))
    thread.start()
    thread.join(10)
    assert seen == [due]  # another thread, its own connection, the same answer


def test_dispose_waits_for_a_poll_in_progress_before_closing_its_connection(tmp_path):
    """A loop left behind by a stuck shutdown may still be polling when the store is closed:
    closing its sqlite3 connection under the running query crashed the interpreter. dispose
    now waits for the query, which returns its value."""
    db = Database(f"sqlite:///{tmp_path / 'poll.db'}")
    slow = sa.select(sa.literal_column(
        "(WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 2000000)"
        " SELECT count(*) FROM c)", sa.Integer))
    started, seen = threading.Event(), []

    def poll_slowly():
        started.set()
        seen.append(db.poll(slow))

    thread = threading.Thread(target=poll_slowly)
    thread.start()
    started.wait()
    wait_for(lambda: db._poll_open and db._poll_open[0].using.locked(),
             message="the poll query to be running")
    db.dispose()
    thread.join(timeout=30)
    assert seen == [2000000]
    assert db._poll_conns is not None and not db._poll_open


def _log_frames(path, frames):
    """Write about ``frames`` pages of log to the SQLite file at ``path`` (WAL, no automatic
    checkpoint), in small transactions as runs are written."""
    conn = sqlite3.connect(path, isolation_level=None)
    assert conn.execute("PRAGMA journal_mode=WAL").fetchone() == ("wal",)
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE IF NOT EXISTS filler (id INTEGER PRIMARY KEY, pad TEXT)")
    for _ in range(frames // 2):
        conn.execute("INSERT INTO filler (pad) VALUES (?)", ("x" * 3000,))
    return conn


def test_a_checkpoint_that_copied_the_whole_log_does_not_hold_the_writers(tmp_path):
    """Past RESTART_PAGES of log, the writers are held back for a second pass only when the
    first could not copy it all: a log copied whole starts over at the next write by itself."""
    from scheduler_app.store.db import _Checkpointer

    path = str(tmp_path / "log.sqlite3")
    held = []

    @contextlib.contextmanager
    def hold_writers():
        held.append(True)
        yield

    checkpointer = _Checkpointer(path, hold_writers)
    writer = _log_frames(path, 2 * _Checkpointer.RESTART_PAGES)
    conn = sqlite3.connect(path, isolation_level=None)
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    frames = os.path.getsize(f"{path}-wal") // (page + 24)
    assert frames >= 2 * _Checkpointer.RESTART_PAGES  # the log is past the threshold
    checkpointer._checkpoint(conn)
    assert held == []
    writer.execute("INSERT INTO filler (pad) VALUES ('after')")  # starts the log over
    _busy, log_pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    assert 0 < log_pages < 10 and copied == log_pages

    # A reader on an older snapshot keeps the first pass from copying it all: then held.
    reader = sqlite3.connect(path, isolation_level=None)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM filler").fetchone()
    for _ in range(_Checkpointer.RESTART_PAGES):
        writer.execute("INSERT INTO filler (pad) VALUES (?)", ("x" * 3000,))
    checkpointer._checkpoint(conn)
    assert held == [True]
    reader.execute("COMMIT")
    for c in (reader, writer, conn):
        c.close()
