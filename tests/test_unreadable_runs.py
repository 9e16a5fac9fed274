"""A run whose stored row was changed by hand so that it cannot be read (its arguments no
longer JSON: SQLite's text column takes that, PostgreSQL's JSON column refuses it). Whichever
claim takes it (the poll's, free or counted, a wake-up's by its id, a settle's by its id), it
ends failed ``UnreadableRun`` on its own, with its alert, and the claim goes on: the runs
behind it are taken as usual and a settle in the same transaction is kept."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler_app.store import Database, NextClaim, RunState, Store
from scheduler_app.store.schema import alerts, runs
from scheduler_app.timeutil import utcnow
from tests.conftest import new_run, queue_unreadable

TASKS = frozenset({"demo.echo"})


@pytest.fixture
def store(tmp_path: Any) -> Iterator[Store]:
    db = Database(f"sqlite:///{tmp_path / 'runs.sqlite3'}")
    db.migrate()
    yield Store(db, alert_on=("failed",))
    db.dispose()


def assert_ended_unreadable(store: Store, run_id: int) -> None:
    with store.db.engine.connect() as conn:
        row = conn.exec_driver_sql(
            f"SELECT state, node, finished_at IS NOT NULL, json_extract(error, '$.type') "
            f"FROM {runs.name} WHERE id = ?", (run_id,)).one()
        alerted = conn.execute(sa.select(alerts.c.run_id, alerts.c.event)).all()
    assert tuple(row) == ("failed", "node-a", 1, "UnreadableRun")
    assert [tuple(a) for a in alerted] == [(run_id, "failed")]
    finished = store.stats.snapshot(lease_seconds=30).runs_finished
    assert finished[("demo.echo", "failed")] == 1


def test_the_poll_claim_ends_an_unreadable_run_and_takes_the_runs_behind_it(store: Store
                                                                            ) -> None:
    bad = queue_unreadable(store)
    good = store.runs.create(new_run(scheduled_for=utcnow() - timedelta(seconds=1))).id

    claimed = store.runs.claim("node-a", 10, {}, tasks=TASKS)

    assert [(r.id, r.state, r.node) for r in claimed] == [(good, RunState.RUNNING, "node-a")]
    assert_ended_unreadable(store, bad)
    assert store.runs.claim("node-a", 10, {}, tasks=TASKS) == []


def test_the_counted_claim_ends_an_unreadable_run_and_takes_the_runs_behind_it(store: Store
                                                                              ) -> None:
    """A run under a limit (here a concurrency key) is claimed with every limit counted, by
    another statement than a free run's: the same holds there."""
    bad = queue_unreadable(store, concurrency_key="tenant-1", concurrency_limit=2)
    good = store.runs.create(new_run(scheduled_for=utcnow() - timedelta(seconds=1),
                                     concurrency_key="tenant-1", concurrency_limit=2)).id

    claimed = store.runs.claim("node-a", 10, {}, tasks=TASKS)

    assert [(r.id, r.state, r.node) for r in claimed] == [(good, RunState.RUNNING, "node-a")]
    assert claimed[0].kwargs == new_run().kwargs
    assert_ended_unreadable(store, bad)


def test_a_wake_ups_claim_by_id_ends_an_unreadable_run(store: Store) -> None:
    bad = queue_unreadable(store)

    assert store.runs.claim_named(bad, "node-a", TASKS) == (None, False)

    assert_ended_unreadable(store, bad)


def test_a_settles_claim_by_id_ends_an_unreadable_run_and_keeps_the_settle(store: Store
                                                                         ) -> None:
    finishing = store.runs.create(new_run(), running_on="node-a")
    bad = queue_unreadable(store)
    good = store.runs.create(new_run(scheduled_for=utcnow() - timedelta(seconds=1))).id

    handover = store.runs.finish_and_claim(
        finishing.id, "node-a", RunState.SUCCEEDED, result={"kept": True},
        claim_next=NextClaim(TASKS, {}, named=(bad,)))

    assert handover.settled is not None and handover.claimed is None
    settled = store.runs.get(finishing.id)
    assert settled is not None and (settled.state, settled.result) == (
        RunState.SUCCEEDED, {"kept": True})
    assert_ended_unreadable(store, bad)
    taken = store.runs.claim("node-a", 10, {}, tasks=TASKS)
    assert [r.id for r in taken] == [good]
