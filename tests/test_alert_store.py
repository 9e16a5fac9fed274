"""Alerts kept in the database, on SQLite and PostgreSQL alike: each is written in the very
transaction that ends its run (and only for the ends asked for), claimed by one node at a time
under a lease that another node takes over once it runs out, and pruned with its run but
never while it is pending."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler_app.store import Database, RunState, Store
from scheduler_app.store.alerts import DELIVERED, GIVEN_UP, PENDING
from scheduler_app.store.schema import alerts
from scheduler_app.timeutil import utcnow
from tests.conftest import end_a_run_unreadable, new_run

EVENTS = ("failed", "cancelled")
ERROR = {"type": "RuntimeError", "message": "boom", "traceback": None}


@pytest.fixture
def stores(any_db_url: str) -> Iterator[tuple[Store, Store]]:
    """Two nodes' stores (each its own engine and pool) on one migrated database, both
    recording alerts of failed and cancelled runs."""
    dbs = [Database(any_db_url), Database(any_db_url)]
    dbs[0].migrate()
    yield Store(dbs[0], alert_on=EVENTS), Store(dbs[1], alert_on=EVENTS)
    for db in dbs:
        db.dispose()


def rows(store: Store) -> list[dict[str, Any]]:
    with store.db.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(alerts).order_by(alerts.c.id))
                .mappings()]


def running(store: Store, node: str = "a", **overrides: Any) -> int:
    run = store.runs.create(new_run(**overrides), running_on=node)
    return run.id


def test_an_alert_is_written_with_the_end_of_its_run_only_for_the_ends_asked_for(
        stores: tuple[Store, Store]) -> None:
    store, _ = stores
    failed = running(store)
    store.runs.finish(failed, "a", RunState.FAILED, error=ERROR)
    succeeded = running(store)
    store.runs.finish(succeeded, "a", RunState.SUCCEEDED, result=1)  # not in ALERT_ON
    retried = running(store, max_attempts=2)
    store.runs.finish(retried, "a", RunState.FAILED, error=ERROR)  # re-queued: not an end
    lost = running(store, node="ghost:1:x")
    queued = store.runs.create(new_run(scheduled_for=utcnow() + timedelta(hours=1))).id
    store.runs.request_cancel(queued)  # ended by the request itself, not a node
    store.runs.settle_lost(utcnow(), ["ghost:1:x"])

    got = rows(store)
    assert [(r["run_id"], r["event"], r["state"], r["attempts"], r["claimed_by"])
            for r in got] == [(failed, "failed", PENDING, 0, None),
                              (queued, "cancelled", PENDING, 0, None),
                              (lost, "failed", PENDING, 0, None)]
    assert all(r["next_attempt_at"] <= utcnow() for r in got)  # due at once

    # A store that records no alerts (no ALERT_WEBHOOK_URL) writes none.
    quiet = Store(store.db)
    run_id = quiet.runs.create(new_run(), running_on="b").id
    quiet.runs.finish(run_id, "b", RunState.FAILED, error=ERROR)
    assert len(rows(store)) == 3


def test_a_run_and_its_alert_commit_together_or_not_at_all(stores: tuple[Store, Store]
                                                           ) -> None:
    """The finish that loses to a reaper (the run is no longer this node's) writes no alert,
    and an alert that cannot be written takes the run's end down with it."""
    store, _ = stores
    run_id = running(store)
    assert store.runs.finish(run_id, "someone-else", RunState.FAILED, error=ERROR) is None
    assert rows(store) == []

    with store.db.write() as conn:  # an alert already there for this (run, event): refused
        conn.execute(alerts.insert().values(run_id=run_id, event="failed", state=DELIVERED,
                                            attempts=1, next_attempt_at=utcnow(),
                                            created_at=utcnow()))
    with pytest.raises(sa.exc.IntegrityError):
        store.runs.finish(run_id, "a", RunState.FAILED, error=ERROR)
    run = store.runs.get(run_id)
    assert run is not None and run.state is RunState.RUNNING


def test_one_node_holds_an_alert_until_its_lease_ends(stores: tuple[Store, Store]) -> None:
    a, b = stores
    run_id = running(a)
    a.runs.finish(run_id, "a", RunState.FAILED, error=ERROR)

    held = a.alerts.claim("node-a", lease_seconds=1.0)
    assert held is not None and (held.run.id, held.event, held.attempts) == (run_id,
                                                                              "failed", 0)
    assert held.run.state is RunState.FAILED and held.run.error == ERROR
    assert b.alerts.claim("node-b", lease_seconds=1.0) is None  # held: not due
    assert a.alerts.claim("node-a", lease_seconds=1.0) is None
    assert b.alerts.next_due() == held.lease_until
    assert rows(a)[0]["claimed_by"] == "node-a"

    # node-a died mid-post: once its lease ends, node-b takes the alert over.
    time.sleep(max(0.0, (held.lease_until - utcnow()).total_seconds()) + 0.05)
    taken = b.alerts.claim("node-b", lease_seconds=30.0)
    assert taken is not None and taken.id == held.id
    assert rows(a)[0]["claimed_by"] == "node-b"
    # A late answer of node-a's changes nothing: the alert is no longer its to write.
    assert not a.alerts.attempted(held, "node-a", state=DELIVERED)
    assert b.alerts.attempted(taken, "node-b", state=PENDING, error="503", retry_in=60.0)
    row = rows(a)[0]
    assert (row["state"], row["attempts"], row["claimed_by"], row["last_error"]) == (
        PENDING, 1, None, "503")
    assert row["next_attempt_at"] > utcnow() + timedelta(seconds=55)  # the backoff
    assert a.alerts.claim("node-a", lease_seconds=1.0) is None


def test_an_attempt_cut_short_is_not_counted_and_is_due_at_once(stores: tuple[Store, Store]
                                                                ) -> None:
    a, b = stores
    run_id = running(a)
    a.runs.finish(run_id, "a", RunState.FAILED, error=ERROR)
    held = a.alerts.claim("node-a", lease_seconds=60.0)
    assert held is not None
    assert a.alerts.attempted(held, "node-a", state=PENDING, error="timed out", retry_in=0.0,
                              counted=False)
    taken = b.alerts.claim("node-b", lease_seconds=60.0)
    assert taken is not None and taken.attempts == 0
    assert b.alerts.attempted(taken, "node-b", state=GIVEN_UP, error="404")
    row = rows(a)[0]
    assert (row["state"], row["attempts"], row["last_error"]) == (GIVEN_UP, 1, "404")
    assert row["finished_at"] is not None
    assert a.alerts.next_due() is None and a.alerts.pending_count() == 0


def test_concurrent_claims_never_share_an_alert(stores: tuple[Store, Store]) -> None:
    """Eight senders on two engines claim 30 alerts at once: each is claimed exactly once."""
    store, _ = stores
    for _ in range(30):
        run_id = running(store)
        store.runs.finish(run_id, "a", RunState.FAILED, error=ERROR)
    claimed: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(8)

    def sender(node: str, s: Store) -> None:
        barrier.wait()
        misses = 0
        while misses < 3:  # a miss may be a race lost to another sender: look again
            alert = s.alerts.claim(node, lease_seconds=60.0)
            if alert is None:
                misses += 1
                continue
            misses = 0
            with lock:
                claimed.append(alert.id)

    threads = [threading.Thread(target=sender, args=(f"n{i}", stores[i % 2]))
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(claimed) == sorted(r["id"] for r in rows(store))
    assert Counter(claimed).most_common(1)[0][1] == 1
    assert len({r["claimed_by"] for r in rows(store)}) > 1


def test_prune_keeps_a_run_whose_alert_is_pending(stores: tuple[Store, Store]) -> None:
    store, _ = stores
    ids = []
    for _ in range(3):
        ids.append(running(store))
        store.runs.finish(ids[-1], "a", RunState.FAILED, error=ERROR)
    for _ in range(2):  # the first two delivered, given up; the third still pending
        alert = store.alerts.claim("n", lease_seconds=60.0)
        assert alert is not None
        store.alerts.attempted(alert, "n", state=DELIVERED if alert.run.id == ids[0]
                               else GIVEN_UP)

    assert store.runs.prune(utcnow() + timedelta(seconds=1)) == 2
    assert store.runs.get(ids[0]) is None and store.runs.get(ids[1]) is None
    assert [(r["run_id"], r["state"]) for r in rows(store)] == [(ids[2], PENDING)]
    assert store.runs.get(ids[2]) is not None


# -- a run whose row cannot be read as a run (changed by hand) ----------------------------------

def test_a_run_ended_unreadable_has_its_alert_with_what_can_be_read(tmp_path: Any) -> None:
    """A queued run whose stored arguments are not JSON (changed by hand; SQLite's text
    column takes them) is taken over, cannot be read, and ends failed ``UnreadableRun``: that
    end writes its alert like any other, and the claim hands over what can be read of the
    row (its arguments as None, the error saying why) instead of failing at every poll."""
    db = Database(f"sqlite:///{tmp_path / 'bad.sqlite3'}")
    db.migrate()
    store = Store(db, alert_on=EVENTS)
    try:
        bad = end_a_run_unreadable(store)

        assert [(r["run_id"], r["event"], r["state"]) for r in rows(store)] == [
            (bad, "failed", PENDING)]
        alert = store.alerts.claim("n", lease_seconds=60.0)
        assert alert is not None and alert.run is None
        assert (alert.run_id, alert.task, alert.job_id) == (bad, "demo.echo", None)
        seen = alert.unreadable
        assert seen is not None
        assert (seen["id"], seen["task"], seen["state"], seen["kwargs"]) == (
            bad, "demo.echo", "failed", None)
        assert seen["error"]["type"] == "UnreadableRun"
        assert "not JSON: kwargs" in seen["unreadable"]
        assert isinstance(seen["created_at"], str) and isinstance(seen["finished_at"], str)
    finally:
        db.dispose()


def test_an_alert_whose_run_has_a_state_this_code_does_not_know_is_claimed_as_read(
        stores: tuple[Store, Store]) -> None:
    """On either database: the alerted run's row changed by hand after its end, to a state
    this code never writes. The claim still takes the alert, with the columns as stored and
    the reason it is not a run; a readable run next to it comes as a run."""
    from scheduler_app.store.schema import runs

    store, _ = stores
    changed, kept = running(store), running(store)
    for run_id in (changed, kept):
        store.runs.finish(run_id, "a", RunState.FAILED, error=ERROR)
    with store.db.engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == changed).values(state="archived"))

    first = store.alerts.claim("n", lease_seconds=60.0)
    second = store.alerts.claim("n", lease_seconds=60.0)

    assert first is not None and first.run is None and first.unreadable is not None
    assert (first.unreadable["id"], first.unreadable["state"]) == (changed, "archived")
    assert first.unreadable["error"] == ERROR and first.unreadable["kwargs"] == new_run().kwargs
    assert "archived" in first.unreadable["unreadable"]
    assert second is not None and second.run is not None and second.unreadable is None
    assert second.run == store.runs.get(kept)
