"""Claiming the run a wake-up named, by its id (``RunStore.claim_named``), on a real SQLite
file and a real PostgreSQL database: one node gets it, a run any limit applies to is left to
the full claim, and on PostgreSQL a run another node is taking is skipped, not waited for."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from datetime import timedelta

import pytest
import sqlalchemy as sa

from scheduler_app.store import RunState
from scheduler_app.store.schema import runs
from scheduler_app.timeutil import utcnow
from tests.conftest import migrated_store, new_run

UNLIMITED = {"demo.echo"}


def test_the_named_run_is_taken_once_and_its_wait_counted(store):
    run = store.runs.create(new_run(scheduled_for=utcnow() - timedelta(seconds=2)))
    taken, counted = store.runs.claim_named(run.id, "node-a", UNLIMITED)
    assert taken is not None and taken.id == run.id
    assert (taken.state, taken.node) == (RunState.RUNNING, "node-a")
    assert store.runs.claim_named(run.id, "node-b", UNLIMITED) == (None, False)
    assert store.runs.get(run.id).node == "node-a"

    # PostgreSQL counts the wait in the claim's own statement; SQLite after, apart.
    assert counted is (store.db.dialect == "postgresql")
    if not counted:
        store.runs.count_waits([taken])
    wait = store.stats.snapshot(lease_seconds=30).queue_wait["demo.echo"]
    assert wait.count == 1 and 2 <= wait.sum < 10
    cumulative = dict(wait.buckets)
    assert (cumulative[1.0], cumulative[2.5]) == (0, 1)  # in the (1, 2.5] bucket


@pytest.mark.parametrize("case", ["concurrency key", "rate limit", "task not unlimited here",
                                  "due later", "cancelled", "no such run"])
def test_a_run_the_fast_claim_may_not_take_stays_as_it_was(store, case):
    overrides: dict = {}
    if case == "concurrency key":
        overrides = {"concurrency_key": "k", "concurrency_limit": 1}
    elif case == "rate limit":
        overrides = {"rate_limit": "1/s", "rate_key": "demo.echo"}
    elif case == "due later":
        overrides = {"scheduled_for": utcnow() + timedelta(minutes=5)}
    run = store.runs.create(new_run(**overrides))
    run_id = run.id
    unlimited = {"demo.other"} if case == "task not unlimited here" else UNLIMITED
    if case == "cancelled":
        store.runs.request_cancel(run_id)
    elif case == "no such run":
        run_id += 1000
    before = store.runs.get(run.id)
    assert store.runs.claim_named(run_id, "node-a", unlimited) == (None, False)
    assert store.runs.get(run.id) == before
    assert "demo.echo" not in store.stats.snapshot(lease_seconds=30).queue_wait


def test_a_run_due_within_the_clock_skew_is_taken(store):
    """The sender said "due now" by its clock; a claiming host a little behind still takes it."""
    run = store.runs.create(new_run(scheduled_for=utcnow() + timedelta(milliseconds=300)))
    assert store.runs.claim_named(run.id, "node-a", UNLIMITED)[0] is not None


def test_postgresql_a_run_another_node_is_taking_is_skipped_at_once(pg_url):
    """The losers of a wake-up's race do not queue behind the winner's transaction: they see
    the row locked and leave it. Once the winner rolls back, the run can be taken again."""
    with contextmanager(migrated_store)(pg_url) as store:
        run = store.runs.create(new_run())
        locked, release = threading.Event(), threading.Event()

        def winner_in_flight() -> None:
            with store.db.engine.connect() as conn, conn.begin() as tx:
                conn.execute(sa.select(runs.c.id).where(runs.c.id == run.id).with_for_update())
                locked.set()
                release.wait(10)
                tx.rollback()

        holder = threading.Thread(target=winner_in_flight)
        holder.start()
        try:
            assert locked.wait(10)
            started = time.monotonic()
            assert store.runs.claim_named(run.id, "node-b", UNLIMITED) == (None, False)
            assert time.monotonic() - started < 2, "the claim waited for the row lock"
        finally:
            release.set()
            holder.join(10)
        assert store.runs.get(run.id).state is RunState.QUEUED
        assert store.runs.claim_named(run.id, "node-b", UNLIMITED)[0] is not None
