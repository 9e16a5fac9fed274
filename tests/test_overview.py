"""The overview's queries (store/overview.py) on SQLite and PostgreSQL, and its service."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from scheduler_app.dashboard.chart import minute_chart, nice_ceiling
from scheduler_app.store import Database, RunState
from scheduler_app.store.overview import OverviewQueries
from scheduler_app.store.schema import runs

NOW = datetime(2026, 11, 25, 12, 30, 40, tzinfo=UTC)


@pytest.fixture
def db(any_db_url):
    database = Database(any_db_url)
    database.migrate()
    yield database
    database.dispose()


def add(db: Database, state: RunState, finished: datetime | None, task: str = "demo.echo",
        error: dict | None = None) -> None:
    with db.write() as conn:
        conn.execute(sa.insert(runs).values(
            task=task, kwargs={}, state=state.value, attempt=1, max_attempts=1,
            retry_backoff=1.0, cancel_requested=False, errors=[], error=error,
            created_at=(finished or NOW) - timedelta(seconds=5),
            scheduled_for=(finished or NOW) - timedelta(seconds=5),
            started_at=None if state is RunState.QUEUED else (finished or NOW)
            - timedelta(seconds=4),
            finished_at=finished))


def test_counts_per_window_and_per_minute(db):
    q = OverviewQueries(db)
    add(db, RunState.QUEUED, None)
    add(db, RunState.RUNNING, None)
    add(db, RunState.RUNNING, None)
    add(db, RunState.SUCCEEDED, NOW - timedelta(seconds=10))           # this minute
    add(db, RunState.SUCCEEDED, NOW - timedelta(seconds=50))           # the minute before
    add(db, RunState.FAILED, NOW - timedelta(seconds=50),
        error={"type": "RuntimeError", "message": "boom", "traceback": ""})
    add(db, RunState.CANCELLED, NOW - timedelta(minutes=30))
    add(db, RunState.FAILED, NOW - timedelta(hours=5), task="old.one")  # the day, not the hour
    add(db, RunState.SUCCEEDED, NOW - timedelta(days=2))              # neither

    assert q.active_counts() == {RunState.QUEUED: 1, RunState.RUNNING: 2}
    assert q.finished_counts(NOW - timedelta(hours=1)) == {
        RunState.SUCCEEDED: 2, RunState.FAILED: 1, RunState.CANCELLED: 1}
    assert q.finished_counts(NOW - timedelta(days=1)) == {
        RunState.SUCCEEDED: 2, RunState.FAILED: 2, RunState.CANCELLED: 1}

    minutes = q.per_minute(NOW, 60)
    assert len(minutes) == 60
    assert minutes[-1].start == NOW.replace(second=0)
    assert minutes[0].start == NOW.replace(second=0) - timedelta(minutes=59)
    assert (minutes[-1].succeeded, minutes[-1].failed) == (1, 0)
    assert (minutes[-2].succeeded, minutes[-2].failed) == (1, 1)
    assert minutes[-31].cancelled == 1
    assert sum(m.total for m in minutes) == 4

    failures, total = q.recent_failures(NOW - timedelta(days=1), limit=1)
    assert total == 2
    assert [f.error["message"] for f in failures if f.error] == ["boom"]  # newest first


def test_an_empty_database(db):
    q = OverviewQueries(db)
    assert q.active_counts() == {RunState.QUEUED: 0, RunState.RUNNING: 0}
    assert set(q.finished_counts(NOW).values()) == {0}
    assert all(m.total == 0 for m in q.per_minute(NOW, 5))
    assert q.recent_failures(NOW) == ([], 0)


def test_the_chart_scale_and_bars(db):
    assert [nice_ceiling(v) for v in (0, 1, 2, 3, 7, 10, 11, 99, 101)] == [
        1, 1, 2, 5, 10, 10, 20, 100, 200]
    add(db, RunState.SUCCEEDED, NOW - timedelta(seconds=5))
    add(db, RunState.FAILED, NOW - timedelta(seconds=5))
    add(db, RunState.SUCCEEDED, NOW - timedelta(seconds=5))
    chart = minute_chart(OverviewQueries(db).per_minute(NOW, 10), width=100, height=50)
    assert (chart.total, chart.peak, chart.scale) == (3, 3, 5)
    last = chart.bars[-1]
    assert [(s.state, s.count) for s in last.segments] == [("succeeded", 2), ("failed", 1)]
    assert last.segments[0].height == 20 and last.segments[0].y == 30  # stacked from below
    assert last.summary == "2 succeeded, 1 failed"
    assert chart.bars[0].segments == () and chart.bars[0].summary == "no runs finished"
